"""The header-time check: a body is bounded by its route, and a proxied body is read only
for a plausible token.

twisted.web reads a whole request body (to a temporary file above 100 KB) before the
resource sees the request, so without this 40 token-less 4 MiB POSTs held 160 MB before
their 401. ``BodyGate`` is the Site's ``head_check`` (http/request.py). It bounds each body
by its route, and for a request the root table routes to the proxy it runs the guard's
synchronous checks (token present and well-formed, signature, issuer, audience, expiry,
scopes; from the guard's cache when the token was seen before). When they fail, the request
is answered at once, through the usual render path, with an empty body: the same 401 (or
400/403) and challenge as always. Revocation, which needs storage, is still checked by the
guard when the request is rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authproxy.proxy.guard import BearerError, BearerGuard

PROXY_ROUTE = "proxy"


# Twice the largest body an authorization-server endpoint reads (registration JSON and the
# token and revocation forms, 64 KiB): bodies between the two still get the endpoint's own
# error; larger ones are refused before a byte of them is buffered.
LOCAL_ROUTE_MAX_BODY = 128 * 1024


class BodyGate:
    """The Site's ``head_check``: a request's route, its body bound, and whether a proxied
    request is answered before its body (its token fails the guard's synchronous checks).

    ``proxied_max_body`` (``server.max_request_body``) bounds proxied bodies, and at most
    ``LOCAL_ROUTE_MAX_BODY`` of it the other routes'; None leaves the Site's bound alone.
    """

    def __init__(
        self,
        route_of: Callable[[bytes], str],
        guard: BearerGuard,
        proxied_max_body: int | None = None,
        misdirected: Callable[[Any], bool] | None = None,
    ) -> None:
        self.route = route_of
        # a request for a foreign Host is answered (421) before its body, on any route
        self._misdirected = misdirected
        self._guard = guard
        self._proxied = proxied_max_body
        self._local = (
            None if proxied_max_body is None else min(proxied_max_body, LOCAL_ROUTE_MAX_BODY)
        )

    def body_limit(self, route: str) -> int | None:
        return self._proxied if route == PROXY_ROUTE else self._local

    def answer_before_body(self, request: Any, route: str) -> bool:
        if self._misdirected is not None and self._misdirected(request):
            return True
        if route != PROXY_ROUTE:
            return False  # the authorization server and the probes read their own bodies
        try:
            self._guard.precheck(request)
        except BearerError:
            return True
        return False
