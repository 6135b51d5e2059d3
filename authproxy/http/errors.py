"""One error path: every error response is an ``HTTPError``, and one mapper renders it.

Resources raise; they never write error bodies themselves. Each kind of error says what it
looks like (``response()``: status, headers, body): JSON ``{"error", "error_description"}``
for API clients (OAuth errors, the bearer guard's challenges, the proxy's gateway errors,
the connection's refusals) and an HTML page (http/pages.py) for people in browsers.
``render_error`` puts that on a twisted.web ``Request``; ``render_error_bytes`` makes the
whole HTTP/1.1 response for the places that answer before a Request exists (the
connection's refusals, the 413 sent while a body is still arriving).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from http import HTTPStatus

import attrs
from twisted.web.server import Request

from authproxy.http import pages
from authproxy.http.responses import NO_STORE

JSON_CONTENT_TYPE = ("Content-Type", "application/json")
# RFC 9110 names; Python 3.11's HTTPStatus still has the RFC 7231 ones for these.
_PHRASES = {413: "Content Too Large", 414: "URI Too Long"}


@attrs.frozen
class ErrorResponse:
    """What an error looks like on the wire: status, headers in order, body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def json_response(
    status: int, payload: Mapping[str, str], headers: Mapping[str, str]
) -> ErrorResponse:
    """A JSON error response: ``Content-Type`` first, then ``headers``, compact JSON body."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return ErrorResponse(status, (JSON_CONTENT_TYPE, *headers.items()), body)


class HTTPError(Exception):
    """Base of every error response; subclasses say how they look in ``response()``."""

    status: int

    def response(self) -> ErrorResponse:
        raise NotImplementedError


class JSONError(HTTPError):
    """``{"error", "error_description"}`` with exactly the given headers (no caching rule added:
    the 404, 405 and 500 of the router and of ``AsyncResource`` carry none)."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.headers = dict(headers or {})

    def payload(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def response_headers(self) -> Mapping[str, str]:
        return self.headers

    def response(self) -> ErrorResponse:
        return json_response(self.status, self.payload(), self.response_headers())


class OAuthError(JSONError):
    """An RFC 6749 §5.2 style error: JSON that no cache keeps, plus ``headers``."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int = 400,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, error, description, headers)

    def response_headers(self) -> Mapping[str, str]:
        return {**NO_STORE, **self.headers}


class BadHeader(OAuthError):
    """A request header whose bytes are not UTF-8: 400 invalid_request naming the header."""

    def __init__(self, name: str) -> None:
        super().__init__("invalid_request", f"the {name} header is not valid UTF-8")
        self.header = name


class ProxyError(JSONError):
    """An error of the proxied MCP endpoint itself (origin, target, size, sessions, the
    backend): JSON that no cache keeps; ``retry_after`` seconds for the caps' 503s."""

    def __init__(
        self, status: int, error: str, description: str, retry_after: str | None = None
    ) -> None:
        headers = {**NO_STORE, "Retry-After": retry_after} if retry_after else NO_STORE
        super().__init__(status, error, description, headers)


class HTMLPageError(HTTPError):
    """An error shown to a person in a browser (never redirected to a client)."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        advice: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{title}: {message}")
        self.status = status
        self.title = title
        self.message = message
        self.advice = advice
        self.headers = dict(headers or {})

    def response(self) -> ErrorResponse:
        body = pages.message_page(self.title, self.message, self.advice, self.status)
        headers = {**pages.page_headers(has_form=False), **self.headers}
        return ErrorResponse(self.status, tuple(headers.items()), body)


def not_found() -> JSONError:
    """The JSON 404 for paths nobody mounted."""
    return JSONError(404, "not_found", "no such path on this server")


def method_not_allowed(allowed: Iterable[str], description: str) -> JSONError:
    """A JSON 405 whose ``Allow`` header names the methods the route takes (in that order)."""
    return JSONError(405, "method_not_allowed", description, {"Allow": ", ".join(allowed)})


def storage_unavailable(retry_after: int, for_browsers: bool) -> HTTPError:
    """The 503 for a storage server that cannot answer now (``StorageUnavailable``): an
    OAuth ``temporarily_unavailable`` for API clients, a page for people in browsers."""
    headers = {"Retry-After": str(retry_after)}
    if for_browsers:
        return HTMLPageError(
            503,
            "Temporarily unavailable",
            "The sign-in service cannot reach its storage right now.",
            f"Try again in a few seconds (after {retry_after} s).",
            headers,
        )
    description = "storage is temporarily unavailable; retry later"
    return OAuthError("temporarily_unavailable", description, 503, headers)


def internal_error() -> JSONError:
    """The 500 for anything unexpected: no details reach the client (they are logged)."""
    return JSONError(500, "server_error", "internal error")


def render_error(request: Request, error: HTTPError) -> bytes:
    """Set ``error``'s status and headers on ``request``; return its body."""
    response = error.response()
    request.setResponseCode(response.status)
    for name, value in response.headers:
        request.setHeader(name, value)
    return response.body


def write_error(request: Request, error: HTTPError) -> None:
    """Render ``error`` and finish a request rendered with NOT_DONE_YET (unless it is gone)."""
    body = render_error(request, error)
    if not request.finished and not getattr(request, "_disconnected", False):
        request.write(body)
        request.finish()


def render_error_bytes(error: HTTPError) -> bytes:
    """``error`` as a whole HTTP/1.1 response that closes the connection, for answers
    written to a transport before (or instead of) a Request."""
    response = error.response()
    try:
        phrase = _PHRASES.get(response.status) or HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Error"
    lines = [f"HTTP/1.1 {response.status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines += ["Connection: close", f"Content-Length: {len(response.body)}"]
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("latin-1") + response.body
