"""CORS, written once: the public policy of the authorization server's documents and endpoints,
and the allowed-origins policy of the proxied MCP endpoint.

Nothing authproxy serves cross-origin relies on cookies, so no policy allows credentials.
``PublicCORS`` lets any origin read (``*``); ``AllowedOriginsCORS`` applies the MCP transport
rule (a present ``Origin`` must be the public origin or an allowed one, else 403) and echoes
the permitted origin back, varying on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import attrs
from twisted.web.server import Request

from authproxy.http.request_headers import header_text
from authproxy.http.resource import AsyncResource

# A comma-separated list of header names (RFC 9110 tokens), as browsers send in preflights.
_HEADER_LIST = re.compile(
    r"[A-Za-z0-9!#$%&'*+.^_`|~-]+(?:[ \t]*,[ \t]*[A-Za-z0-9!#$%&'*+.^_`|~-]+)*"
)


@attrs.frozen
class PublicCORS:
    """Any origin may call, without credentials.

    ``allow_headers`` is the preflight's ``Access-Control-Allow-Headers`` (None: left out);
    with ``echo_request_headers`` a well-formed ``Access-Control-Request-Headers`` is answered
    with itself. With ``on_every_response`` the preflight's headers go on every response,
    not only ``Access-Control-Allow-Origin``.
    """

    methods: str
    allow_headers: str | None = None
    echo_request_headers: bool = False
    max_age: int = 86400
    on_every_response: bool = True

    def allow(self, request: Request) -> None:
        """The CORS headers of an actual (not preflight) response."""
        if self.on_every_response:
            self._preflight_headers(request)
        else:
            request.setHeader("Access-Control-Allow-Origin", "*")

    def preflight(self, request: Request) -> bytes:
        """Answer a preflight: 204 with the policy's headers."""
        self._preflight_headers(request)
        request.setResponseCode(204)
        return b""

    def _preflight_headers(self, request: Request) -> None:
        request.setHeader("Access-Control-Allow-Origin", "*")
        request.setHeader("Access-Control-Allow-Methods", self.methods)
        allowed = self.allow_headers
        if self.echo_request_headers:
            requested = header_text(request, "Access-Control-Request-Headers")
            if requested is not None and _HEADER_LIST.fullmatch(requested):
                allowed = requested  # header names only, never arbitrary text
        if allowed is not None:
            request.setHeader("Access-Control-Allow-Headers", allowed)
        request.setHeader("Access-Control-Max-Age", str(self.max_age))


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports omitted.

    An unparsable URL (bad IPv6 literal, port out of range) gives ``""``, which matches
    no allowed origin.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


@attrs.frozen
class OriginPolicy:
    """MCP transport rule: a present ``Origin`` must be the public origin or an allowed one."""

    allowed: frozenset[str]

    @classmethod
    def from_config(cls, public_url: str, allowed_origins: Iterable[str]) -> OriginPolicy:
        return cls(frozenset({origin_of(public_url), *(origin_of(o) for o in allowed_origins)}))

    def permits(self, origin: bytes | None) -> bool:
        """True when there is no Origin header or it is acceptable."""
        if origin is None:
            return True
        try:
            text = origin.decode("ascii")
        except UnicodeDecodeError:
            return False
        if text == "null":
            return False
        return origin_of(text) in self.allowed


@attrs.frozen
class AllowedOriginsCORS:
    """The proxied MCP endpoint's CORS: the permitted ``Origin`` echoed back, ``Vary: Origin``."""

    origins: OriginPolicy
    methods: str
    allow_headers: str
    expose_headers: str
    max_age: int = 600

    def permits(self, origin: bytes | None) -> bool:
        return self.origins.permits(origin)

    def allow(self, request: Request, origin: bytes) -> None:
        """The CORS headers of any response to a permitted ``origin``."""
        request.setHeader(b"Access-Control-Allow-Origin", origin)
        request.setHeader("Access-Control-Expose-Headers", self.expose_headers)
        request.responseHeaders.addRawHeader(b"vary", b"Origin")

    def preflight_headers(self, request: Request) -> None:
        """What a preflight from a permitted origin adds to :meth:`allow`'s headers."""
        request.setHeader("Access-Control-Allow-Methods", self.methods)
        request.setHeader("Access-Control-Allow-Headers", self.allow_headers)
        request.setHeader("Access-Control-Max-Age", str(self.max_age))


# What browser-based MCP clients send to the authorization server's endpoints and documents.
CLIENT_REQUEST_HEADERS = "Authorization, Content-Type, MCP-Protocol-Version"


class CrossOriginPost(AsyncResource):
    """A POST endpoint that browser-based clients call from other origins (register, token,
    revoke): the preflight is answered here; ``handle_POST`` calls ``self.cors.allow``."""

    cors = PublicCORS("POST, OPTIONS", CLIENT_REQUEST_HEADERS)

    async def handle_OPTIONS(self, request: Request) -> bytes:
        return self.cors.preflight(request)
