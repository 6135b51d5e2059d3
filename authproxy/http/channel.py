"""The Site's HTTP/1.1 channel: each response leaves in one piece, and at once.

twisted.web's ``HTTPChannel`` puts the status line and headers, then the body, into the
transport's buffer, and the reactor sends the buffer on its next iteration, after it has
served every other socket that was ready. Under a burst each response waited for all the
other requests of that iteration to be handled (the P1 tail).

``ResponseChannel`` holds the head until the first body bytes, the end of the response or
an explicit ``flush_head()`` (a stream's head must go before its first event), then writes
head and body together with ``write_now`` (writenow.py): to the socket at once when nothing
is queued before them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import Request

from authproxy.http.bounded_channel import CONNECTION_DONE, BoundedChannel
from authproxy.http.writenow import no_delay, write_now


class ResponseChannel(BoundedChannel):
    """An ``HTTPChannel`` that writes each response's head with its first body bytes (and
    whose connections are bounded in time and number: bounded_channel.py)."""

    _held_head: bytes | None = None
    _host: Any = None
    _secure: bool | None = None
    #: the Site's open connections, which a graceful shutdown drains (ops/shutdown.py)
    open_channels: set[Any] | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        no_delay(self.transport)
        if self.open_channels is not None:
            self.open_channels.add(self)

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        if self.open_channels is not None:
            self.open_channels.discard(self)
        super().connectionLost(reason)

    # Every request asks both (Request.requestReceived, the proxy's X-Forwarded-Proto), and
    # neither changes during a connection. Asking the transport costs a getsockname() system
    # call, and an interface adaptation.
    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def isSecure(self) -> bool:
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if not isinstance(headers, Headers):
            self.flush_head()
            super().writeHeaders(version, code, reason, headers)
            return
        # As HTTPChannel.writeHeaders: Headers has already refused line breaks.
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head.extend((name, b": ", value, b"\r\n"))
        head.append(b"\r\n")
        self._held_head = b"".join(head)

    def write(self, data: bytes) -> None:
        self._send((data,))

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self._send(iovec)

    def flush_head(self) -> None:
        """Send a held head now (a response whose body comes later: a stream)."""
        if self._held_head is not None:
            self._send(())

    def requestDone(self, request: Any) -> None:
        self.flush_head()  # a response without a body: the head is all of it
        super().requestDone(request)

    def loseConnection(self) -> None:
        self.flush_head()
        super().loseConnection()

    def _send(self, parts: Iterable[bytes]) -> None:
        head, self._held_head = self._held_head, None
        data = b"".join((head, *parts)) if head is not None else b"".join(parts)
        if data:
            write_now(self.transport, data)


class HeadFlushingRequest(Request):
    """The Site's request base: ``write(b"")`` sends the head at once, as it does on a plain
    ``HTTPChannel`` (the proxy relies on it for streams)."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if not data and isinstance(self.channel, ResponseChannel):
            self.channel.flush_head()
