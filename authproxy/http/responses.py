"""Small HTTP helpers shared by every Resource: JSON bodies, OAuth errors, async rendering.

``AsyncResource`` follows Synapse's shape: ``render`` starts a coroutine and returns
NOT_DONE_YET; exceptions end in one place that turns them into error responses, so a bad
request can never kill the daemon or leave a connection hanging.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

log = Logger()

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def add_query(uri: str, params: Mapping[str, str | None]) -> str:
    """``uri`` with ``params`` appended to its query (None values left out)."""
    base, _, fragment = uri.partition("#")
    query = urlencode({k: v for k, v in params.items() if v is not None})
    if not query:
        return uri
    joined = base + ("&" if "?" in base else "?") + query
    return joined + ("#" + fragment if fragment else "")


def set_headers(request: Request, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name, value)


def json_body(
    request: Request,
    status: int,
    payload: Any,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Set status and JSON content type on ``request`` and return the encoded body."""
    request.setResponseCode(status)
    request.setHeader("Content-Type", "application/json")
    if headers:
        set_headers(request, headers)
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def source_key(address: str) -> str:
    """What a source address is counted under by every per-source limit: IPv4 as is, IPv6 by its /64 network.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, a dual-stack listener) counts as the
    IPv4 address it carries. Anything that is not an IP address (a UNIX socket) is its own key.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@attrs.frozen
class TrustedProxies:
    """The CIDRs whose X-Forwarded-* headers are believed (proxy and rate limits alike)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def trusts(self, host: str | None) -> bool:
        if not host or not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class OAuthError(Exception):
    """An RFC 6749 §5.2 style error, rendered as JSON ``{"error", "error_description"}``."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class BadHeader(OAuthError):
    """A request header whose bytes are not UTF-8: 400 invalid_request naming the header."""

    def __init__(self, name: str) -> None:
        super().__init__("invalid_request", f"the {name} header is not valid UTF-8")
        self.header = name


def header_text(request: Request, name: str) -> str | None:
    """The last value of request header ``name`` as text, or None when it is absent.

    Every header read by name goes through here: Twisted's ``getHeader("name")`` decodes
    UTF-8 strictly and raises on other bytes, which became a 500 with a traceback. This
    raises :class:`BadHeader` instead, an OAuthError that AsyncResource answers with 400.
    """
    values = request.requestHeaders.getRawHeaders(name.encode("ascii"))
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader(name) from None


class HTMLPageError(Exception):
    """An error shown to a person in a browser (never redirected to a client)."""

    def __init__(self, status: int, title: str, message: str, advice: str = "") -> None:
        super().__init__(f"{title}: {message}")
        self.status = status
        self.title = title
        self.message = message
        self.advice = advice


def write_json(
    request: Request,
    status: int,
    payload: Any,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Write a complete JSON response to a request rendered with NOT_DONE_YET."""
    body = json_body(request, status, payload, headers)
    if not request.finished and not getattr(request, "_disconnected", False):
        request.write(body)
        request.finish()


# Rendering of HTMLPageError is pluggable so the page templates (consent issue) own the look.
html_error_renderer: Callable[[Request, HTMLPageError], bytes] | None = None


def render_html_error(request: Request, error: HTMLPageError) -> bytes:
    if html_error_renderer is not None:
        return html_error_renderer(request, error)
    from html import escape

    request.setResponseCode(error.status)
    request.setHeader("Content-Type", "text/html; charset=utf-8")
    set_headers(request, NO_STORE)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(error.title)}</title>"
        f"</head><body><h1>{escape(error.title)}</h1><p>{escape(error.message)}</p>"
        f"<p>{escape(error.advice)}</p></body></html>"
    ).encode()


class AsyncResource(Resource):
    """A leaf Resource whose handlers are coroutines ``async def handle_GET(request) -> bytes | None``.

    Returning bytes writes them and finishes; returning None means the handler finished the
    request itself (or is streaming). OAuthError and HTMLPageError become their responses;
    anything else is logged and answered 500 without details.
    """

    isLeaf = True

    def render(self, request: Request) -> Any:
        method = request.method.decode("ascii", "replace")
        handler: Callable[[Request], Coroutine[Any, Any, bytes | None]] | None = getattr(
            self, f"handle_{method}", None
        )
        if method == "HEAD" and handler is None:
            handler = getattr(self, "handle_GET", None)
        if handler is None:
            allowed = sorted(
                name[len("handle_") :] for name in dir(self) if name.startswith("handle_")
            )
            request.setHeader("Allow", ", ".join(allowed))
            return json_body(
                request,
                405,
                {"error": "method_not_allowed", "error_description": f"{method} is not allowed"},
            )
        d: Deferred[bytes | None] = ensureDeferred(handler(request))
        d.addCallbacks(self._finish, self._fail, callbackArgs=(request,), errbackArgs=(request,))
        return NOT_DONE_YET

    def _finish(self, body: bytes | None, request: Request) -> None:
        if body is None or request.finished or getattr(request, "_disconnected", False):
            return
        request.write(body)
        request.finish()

    def _fail(self, failure: Failure, request: Request) -> None:
        err = failure.value
        if isinstance(err, OAuthError):
            body = json_body(request, err.status, err.payload(), {**NO_STORE, **err.headers})
        elif isinstance(err, HTMLPageError):
            body = render_html_error(request, err)
        else:
            log.failure("Unhandled error rendering {path}", failure, path=request.path)
            body = json_body(
                request,
                500,
                {"error": "server_error", "error_description": "internal error"},
            )
        self._finish(body, request)
