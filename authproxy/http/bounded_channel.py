"""The Site's HTTP/1.1 connections, bounded in time and in number.

twisted.web's ``HTTPChannel`` has one timer, an idle timeout that every received byte
resets: a client sending one byte of its request head every few seconds (slowloris) holds
its connection, and its file descriptor, forever. ``BoundedChannel`` runs that same timer
(no timer of its own, nothing more per request) in phases:

- head: from a connection's start, or from the first byte of a later request, the request
  line and headers must be complete within ``header_timeout``; bytes do not extend it.
  Then 408 and close.
- body: ``idle_timeout``, reset by every byte (Twisted's behaviour).
- response: no timer at all, so a stream (SSE) may run for hours.
- between requests: ``idle_timeout``, then the connection is closed quietly.

It also answers what ``HTTPChannel`` drops without a word: a request line over 16 KiB gets
414 and a head over 16 KiB (or 500 header lines) 431. With ``limits`` (connection_limits.py)
a connection over the caps gets 503 at once, and a connection in the probe reserve serves
only ``/health`` and ``/ready``.

Every such answer ends in a lingering close: stop parsing, half-close, and keep reading
and discarding for a moment. Closing a socket with unread input makes the kernel send a
reset, which can destroy the answer before the client has read it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel

from authproxy.http.connection_limits import Admission, ConnectionLimits
from authproxy.http.errors import JSONError, render_error_bytes

CONNECTION_DONE = Failure(ConnectionDone())
PROBE_PATHS = frozenset({b"/health", b"/ready"})
# How long a refused connection may take to read its answer, and how much of the client's
# input is read and thrown away meanwhile.
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024

_HEAD, _BODY, _BUSY, _IDLE = range(4)


def _answer(status: int, error: str, description: str, retry_after: str | None = None) -> bytes:
    # Made once at import: a refusal costs one transport.write of ready bytes.
    headers = {"Cache-Control": "no-store"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return render_error_bytes(JSONError(status, error, description, headers))


BAD_REQUEST = _answer(400, "invalid_request", "malformed request")
REQUEST_TIMEOUT = _answer(408, "request_timeout", "the request did not arrive in time")
URI_TOO_LONG = _answer(414, "uri_too_long", "the request line is too long")
HEADERS_TOO_LARGE = _answer(431, "headers_too_large", "the request headers are too large")
TOO_MANY_CONNECTIONS = _answer(
    503, "too_many_connections", "too many connections; try again later", "5"
)


class BoundedChannel(HTTPChannel):
    """An ``HTTPChannel`` with a head deadline, an idle timeout, caps and real answers."""

    header_timeout: float = 10.0
    idle_timeout: float = 60.0
    limits: ConnectionLimits | None = None

    _phase = _HEAD
    _probes_only = False
    _admitted = False
    _limit_key: str | None = None
    _discarding = False  # no more requests: input is read and thrown away
    _closing = False
    _discarded = 0
    _abort_call: Any = None

    def connectionMade(self) -> None:
        # The first request's head is due within header_timeout of the connection.
        self.timeOut = self.header_timeout  # type: ignore[assignment]
        super().connectionMade()
        if self.limits is None:
            return
        admission, self._limit_key = self.limits.admit(getattr(self.getPeer(), "host", None))
        if admission is Admission.REFUSE:
            self.refuse(TOO_MANY_CONNECTIONS)
            return
        self._admitted = True
        self._probes_only = admission is Admission.PROBES_ONLY

    def connectionLost(self, reason: Failure = CONNECTION_DONE) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self._admitted and self.limits is not None:
            self._admitted = False
            self.limits.release(self._limit_key)
        super().connectionLost(reason)

    # -- input, by phase -----------------------------------------------------------------
    def dataReceived(self, data: bytes) -> Any:
        if self._discarding:
            self._discard(len(data))
            return None
        phase = self._phase
        if phase == _HEAD:
            # Not HTTPChannel.dataReceived: bytes of a head do not push its deadline back.
            return self._parse(data)
        if phase == _IDLE:
            self._phase = _HEAD
            why = self._parse(data)
            if self._phase == _HEAD and not self._discarding:
                # An incomplete head (a complete one, the common case, costs nothing here).
                self.setTimeout(self.header_timeout)
            return why
        return super().dataReceived(data)

    def _parse(self, data: bytes) -> Any:
        return super(HTTPChannel, self).dataReceived(data)  # LineReceiver's

    def rawDataReceived(self, data: bytes) -> None:
        if self._discarding:
            self._discard(len(data))
            return
        super().rawDataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        # One line over MAX_LENGTH (HTTPChannel would close without an answer).
        self.refuse(HEADERS_TOO_LARGE if self._receivedHeaderSize else URI_TOO_LONG)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # HTTPChannel's one refusal, for a malformed head and for its size and count limits;
        # telling them apart here, not per line, keeps the parser's hot path Twisted's own.
        # A request line over the limit is refused before its Request exists.
        if self._receivedHeaderSize > self.totalHeadersSize:
            self.refuse(HEADERS_TOO_LARGE if self.requests else URI_TOO_LONG)
        elif self._receivedHeaderCount > self.maxHeaders:
            self.refuse(HEADERS_TOO_LARGE)
        else:
            self.refuse(BAD_REQUEST)

    def allHeadersReceived(self) -> None:
        if self._probes_only:
            if self._path.partition(b"?")[0] not in PROBE_PATHS:
                self.refuse(TOO_MANY_CONNECTIONS)
                return
            # Free the reserved connection after the probe.
            self.requests[-1].responseHeaders.setRawHeaders(b"connection", [b"close"])
        self._phase = _BODY
        if self.timeOut != self.idle_timeout:
            self.setTimeout(self.idle_timeout)
        super().allHeadersReceived()
        if self._probes_only:
            self.persistent = False

    def allContentReceived(self) -> None:
        if self._discarding:
            return
        self._phase = _BUSY  # HTTPChannel stops the timer until the response is done
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        # Before HTTPChannel replays pipelined input through dataReceived.
        self._phase = _IDLE
        super().requestDone(request)

    def timeoutConnection(self) -> None:
        if self._phase in (_HEAD, _BODY):
            self.refuse(REQUEST_TIMEOUT)
        else:  # idle between requests: close quietly
            self._abort_in(self.abortTimeout)
            self.loseConnection()

    # -- ending a connection -------------------------------------------------------------
    def refuse(self, answer: bytes) -> None:
        """Write ``answer`` (a whole response, with ``Connection: close``) and close."""
        if self._discarding:
            return
        assert self.transport is not None
        self.transport.write(answer)
        self.stop_reading_requests()
        self.loseConnection()

    def stop_reading_requests(self) -> None:
        """Parse no more input (it is read and thrown away); close after the response."""
        if self._discarding:
            return
        self._discarding = True
        self.persistent = False
        self.setTimeout(None)
        self.setRawMode()
        # Bounds a response still being produced; the close below shortens it.
        self._abort_in(self.header_timeout)

    def loseConnection(self) -> None:
        if not self._discarding:
            super().loseConnection()
            return
        if self._closing:
            return
        self._closing = True
        self._abort_in(LINGER_SECONDS)
        transport: Any = self.transport
        # Keep reading (so unread input does not turn the close into a reset).
        network: Any = self._networkProducer
        network.unregisterProducer()
        network.resumeProducing()
        # Not over TLS: a TLS wrapper forwards loseWriteConnection to the socket beneath it,
        # which would cut off bytes still in the TLS layer (a handshake not yet done).
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None and not self.isSecure():
            half_close()
        else:
            transport.loseConnection()

    def _discard(self, size: int) -> None:
        self._discarded += size
        if self._discarded > LINGER_BYTES:
            self._abort()

    def _abort_in(self, seconds: float) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.reset(seconds)
        else:
            self._abort_call = self.callLater(seconds, self._abort)

    def _abort(self) -> None:
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._abort_call = None
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]
