"""The bearer check at header time: a proxied body is read only for a plausible token.

twisted.web reads a whole request body (to a temporary file above 100 KB) before the
resource sees the request, so without this 40 token-less 4 MiB POSTs held 160 MB before
their 401. ``BodyGate`` is the Site's ``head_check`` (http/request.py): for a request the
root table routes to the proxy, it runs the guard's synchronous checks (token present and
well-formed, signature, issuer, audience, expiry, scopes; from the guard's cache when the
token was seen before). When they fail, the request is answered at once, through the usual
render path, with an empty body: the same 401 (or 400/403) and challenge as always.
Revocation, which needs storage, is still checked by the guard when the request is rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authproxy.proxy.guard import BearerError, BearerGuard

PROXY_ROUTE = "proxy"


class BodyGate:
    """``(request, method, uri) -> True`` when the request must be answered before its body."""

    def __init__(self, route_of: Callable[[bytes], str], guard: BearerGuard) -> None:
        self._route_of = route_of
        self._guard = guard

    def __call__(self, request: Any, method: bytes, uri: bytes) -> bool:
        if self._route_of(uri.partition(b"?")[0]) != PROXY_ROUTE:
            return False  # the authorization server and the probes read their own bodies
        try:
            self._guard.precheck(request)
        except BearerError:
            return True
        return False
