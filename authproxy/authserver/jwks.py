"""``/.well-known/jwks.json``: the public part of every key in the KeyRing, active key first.

Cache-Control is ``public, max-age=300``. The rotation procedure (README) adds a new key as a
verify-only ``key-1.pem`` and waits longer than this max-age before promoting it to ``key-0.pem``,
so every relying party that caches the JWKS for up to five minutes already knows the new key by
the time the first token signed with it appears. Five minutes keeps JWKS traffic low while
keeping that wait short; an ETag lets clients revalidate cheaply after it expires.
"""

from __future__ import annotations

from twisted.web.http import CACHED
from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.keys.ring import KeyRing

JWKS_MAX_AGE = 300


class JWKSResource(Resource):
    """Serves the ring's JWKS (rebuilt only when the ring's key set changes)."""

    isLeaf = True

    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._ring = ring

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Access-Control-Allow-Origin", "*")
        request.setHeader("Cache-Control", f"public, max-age={JWKS_MAX_AGE}")
        if request.setETag(f'"{self._ring.jwks_etag()}"'.encode("ascii")) == CACHED:
            return b""
        return self._ring.jwks_json()

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)

    def render_OPTIONS(self, request: Request) -> bytes:
        # CORS preflight from browser-based MCP clients.
        request.setHeader("Access-Control-Allow-Origin", "*")
        request.setHeader("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        request.setHeader("Access-Control-Max-Age", "86400")
        request.setResponseCode(204)
        return b""
