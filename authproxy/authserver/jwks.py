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

from authproxy.http.cors import PublicCORS
from authproxy.keys.ring import KeyRing

JWKS_MAX_AGE = 300


class JWKSResource(Resource):
    """Serves the ring's JWKS (rebuilt only when the ring's key set changes)."""

    isLeaf = True
    # For browser-based MCP clients: the key set is public; no request headers to allow.
    _CORS = PublicCORS("GET, HEAD, OPTIONS", on_every_response=False)

    def __init__(self, ring: KeyRing) -> None:
        super().__init__()
        self._ring = ring

    def render_GET(self, request: Request) -> bytes:
        request.setHeader("Content-Type", "application/json")
        self._CORS.allow(request)
        request.setHeader("Cache-Control", f"public, max-age={JWKS_MAX_AGE}")
        if request.setETag(f'"{self._ring.jwks_etag()}"'.encode("ascii")) == CACHED:
            return b""
        return self._ring.jwks_json()

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)

    def render_OPTIONS(self, request: Request) -> bytes:
        return self._CORS.preflight(request)
