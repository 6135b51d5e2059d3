"""``X-Request-Id``: one id per request, in the access log, sent to the backend, echoed back.

The id comes from a trusted proxy (``server.trusted_proxies``) when it sent a usable one, so
a request can be followed through the proxies in front of authproxy; otherwise it is made
here: a per-process random prefix and a counter, unique across restarts and replicas without
drawing randomness per request.
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import Any

from authproxy.http.responses import NO_TRUSTED_PROXIES, TrustedProxies

HEADER = b"x-request-id"
# Visible ASCII without quotes or backslashes, bounded: it goes into log lines and headers.
_USABLE = re.compile(rb"[!#-\[\]-~]{1,128}\Z")


class RequestIds:
    """Assigns each request its id (``assign``)."""

    def __init__(self, trusted: TrustedProxies = NO_TRUSTED_PROXIES) -> None:
        self._trusted = trusted
        self._prefix = secrets.token_hex(6).encode("ascii")
        self._counter = itertools.count(1)

    def assign(self, request: Any) -> bytes:
        """The id of ``request``: its trusted proxy's, or a fresh one."""
        if self._trusted.networks:
            sent = request.requestHeaders.getRawHeaders(HEADER)
            if sent and _USABLE.match(sent[0]):
                peer = getattr(request.getClientAddress(), "host", None)
                if self._trusted.trusts(peer):
                    return bytes(sent[0])
        return b"%s-%x" % (self._prefix, next(self._counter))
