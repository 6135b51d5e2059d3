"""A Site request class that refuses oversized bodies before they are buffered.

twisted.web buffers a request body into ``request.content`` before rendering. With
``LimitedRequest`` as the Site's ``requestFactory``, a declared ``Content-Length`` above the
limit is answered 413 as soon as the headers are in, and a chunked body is counted while it
arrives and refused the moment it passes the limit. The rest of a refused body is read and
thrown away (up to one more limit's worth, so the client sees the 413 rather than a reset),
then the connection is closed.

When the Site has a ``head_check`` (``HeadCheck``; the daemon's is proxy/early.py's
``BodyGate``), a request with a body is routed once when its headers are in, and the route
decides two things before any of the body is read: its bound (the authorization server's
endpoints take small forms and JSON, so an unauthenticated client cannot make authproxy
buffer ``server.max_request_body`` for them), and whether it is answered at once, rendered
as usual with an empty body (a proxied request without a valid token gets the guard's 401).
Such a request's body is read and thrown away, then the connection is closed.
"""

from __future__ import annotations

import io
from typing import Any, Protocol

from authproxy.http.channel import HeadFlushingRequest
from authproxy.http.errors import JSONError, render_error_bytes

DEFAULT_MAX_BODY = 4 * 1024 * 1024


class HeadCheck(Protocol):
    """What the Site decides about a request with a body once its headers are in."""

    def route(self, path: bytes) -> str:
        """The route serving ``path`` (looked up once per request)."""

    def body_limit(self, route: str) -> int | None:
        """The most body bytes a request to ``route`` may send (None: the Site's)."""

    def answer_before_body(self, request: Any, route: str) -> bool:
        """True when the request is to be answered without reading its body."""


def too_large_description(limit: int) -> str:
    """What a 413 says, here and at the proxy (which checks the body it was handed)."""
    return f"the request body exceeds the limit of {limit} bytes"


class LimitedRequest(HeadFlushingRequest):
    """A ``twisted.web.server.Request`` whose body may not exceed ``max_body`` bytes."""

    max_body: int = DEFAULT_MAX_BODY
    _refused = False
    _received = 0
    _discarded = 0

    def gotLength(self, length: int | None) -> None:
        channel: Any = self.channel
        check: HeadCheck | None = getattr(getattr(channel, "site", None), "head_check", None)
        route = None
        if length != 0 and check is not None:
            route = check.route(channel._path.partition(b"?")[0])
            limit = check.body_limit(route)
            if limit is not None:
                self.max_body = limit
        if length is not None and length > self.max_body:
            self._refuse()
            return
        if route is not None and self._answered_before_body(check, route):  # type: ignore[arg-type]
            return
        super().gotLength(length)

    def _answered_before_body(self, check: HeadCheck, route: str) -> bool:
        channel: Any = self.channel
        stop_reading = getattr(channel, "stop_reading_requests", None)
        if stop_reading is None:
            return False
        method, uri, version = channel._command, channel._path, channel._version
        # what render() will see, so the head check judges the same request line
        self.method, self.uri, self.clientproto = method, uri, version
        self.path = uri.partition(b"?")[0]
        if not check.answer_before_body(self, route):
            return False
        self.content = io.BytesIO()
        # No "100 Continue": the client need not send the body the answer makes moot.
        self.requestHeaders.removeHeader(b"expect")
        stop_reading()
        self.responseHeaders.setRawHeaders(b"connection", [b"close"])
        super().requestReceived(method, uri, version)
        return True

    def connectionLost(self, reason: Any) -> None:
        # Twisted logs a request when it finishes; one whose client left first (a stream
        # the client closed) would be in neither the access log nor the metrics.
        site = getattr(self.channel, "site", None)
        super().connectionLost(reason)
        if (
            not self.finished
            and site is not None
            and getattr(self, "_authproxy_started", None) is not None
        ):
            site.log(self, client_closed=True)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            self._discarded += len(data)
            if self._discarded > self.max_body and self.channel is not None:
                transport: Any = self.channel.transport
                transport.abortConnection()
            return
        self._received += len(data)
        if self._received > self.max_body:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            # The 413 is already on the wire; this connection serves nothing more.
            if self.channel is not None:
                self.channel.loseConnection()
            return
        super().requestReceived(command, path, version)

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()
        self.content = io.BytesIO()
        # No "100 Continue" after a refusal: the channel sends it after gotLength returns.
        self.requestHeaders.removeHeader(b"expect")
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.write(render_error_bytes(self._too_large()))

    def _too_large(self) -> JSONError:
        # Written before the request exists for twisted.web: only the connection's no-store.
        return JSONError(
            413,
            "request_too_large",
            too_large_description(self.max_body),
            {"Cache-Control": "no-store"},
        )


def make_request_factory(max_body: int) -> type[LimitedRequest]:
    """A ``requestFactory`` for ``Site`` enforcing ``max_body`` (``server.max_request_body``)."""
    return type("LimitedRequest", (LimitedRequest,), {"max_body": max_body})
