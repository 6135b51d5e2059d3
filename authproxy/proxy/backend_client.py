"""A lean HTTP/1.1 client for the one backend, behind the ``IAgent`` interface.

twisted.web's ``Agent`` is general (any host, retries, redirects, proxies) and that
generality costs more CPU per request than everything else authproxy does on the proxy
path (benchmarks/README.md, "Why the code is shaped this way"). authproxy talks to exactly one origin, so this client
keeps a pool of keep-alive connections to it, writes each request in one ``write``, parses
the response head itself and streams the body (Content-Length, chunked, or until close) to
the ``IProtocol`` given to ``deliverBody``, exactly as ``Agent`` would: the connection is the
protocol's transport (a push producer, so a slow client can pause the backend read), the
body ends with ``connectionLost(ResponseDone)`` (``PotentialDataLoss`` for a body that ends
with the connection), and ``stopProducing`` aborts the connection.

Requests leave at once (``writenow.write_now``), not on the reactor's next iteration.

A stream that arrives in many small reads (more than one per ``STREAM_BURST_GAP``) is read
in batches: after such a read the connection stops reading for ``STREAM_COALESCE`` (1 ms), so
the events that arrive meanwhile are relayed in one read and one client write. Reading each
event as it lands makes every read, write and wake-up per event, for authproxy and for the
backend and client alike (benchmarks/README.md, P2). A stream slower than one read per 0.2 ms (every ordinary MCP stream,
and P2's 1,000 events/s latency stream) is never delayed; a burst's events wait at most the
coalescing time; bodies of known length and large reads never wait.

A response with both ``Transfer-Encoding`` and ``Content-Length`` is framed by
``Transfer-Encoding`` (RFC 9112 §6.3) and its connection is not reused: the backend and
another reader might disagree on where it ends, the shape of a response-smuggling attempt.

A request on a reused connection that dies before any byte of the answer arrived (the
backend closed it while idle) is retried once on a new connection, for methods without side
effects only; idle connections are closed after ``idle_timeout``, shorter than common server
keep-alive timeouts (uvicorn's is 5 s), to make that race rare.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from authproxy.http.tcp_endpoint import tcp_endpoint
from authproxy.http.writenow import no_delay, write_now
from authproxy.proxy.headers import connection_tokens
from authproxy.supervisor import backend_host_header, backend_host_port

MAX_HEAD = 64 * 1024  # status line and headers
NO_BODY_STATUS = frozenset({204, 304})
_RETRYABLE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"PUT"})
RESPONSE_DONE = Failure(ResponseDone())
STREAM_BURST_GAP = 0.0002  # seconds between two small stream reads that make a burst
STREAM_COALESCE = 0.001  # how long a bursting stream's reads wait for more to arrive
SMALL_READ = 8192  # bytes; a larger read is already a batch


class _Chunked(Enum):
    """Where a chunked body's parser stands between reads."""

    SIZE_LINE = "a chunk-size line is due"
    DATA = "chunk data is due (``_chunk_left`` bytes)"
    DATA_END = "the CRLF after the chunk data is due"
    TRAILERS = "trailer lines, then the blank line that ends the body, are due"


@implementer(IBodyProducer)
class BytesProducer:
    """The (already size-checked) request body, written to the backend in one go."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class BackendProtocolError(Exception):
    """The backend's answer is not valid HTTP/1.1."""


@implementer(IResponse)
class BackendResponse:
    """The response head; ``deliverBody`` starts the body flowing to a protocol."""

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(
        self,
        connection: BackendConnection,
        code: int,
        phrase: bytes,
        headers: Headers,
        length: int | object,
        connection_tokens: frozenset[bytes],
    ) -> None:
        self.code = code
        self.phrase = phrase
        self.headers = headers
        self.length = length
        self.connection_tokens = connection_tokens
        self._connection = connection

    def deliverBody(self, protocol: Any) -> None:
        self._connection.deliver_body(protocol)

    def setPreviousResponse(self, response: IResponse) -> None:  # pragma: no cover - IResponse
        self.previousResponse = response


@implementer(IPushProducer)
class _BodyTransport:
    """What the body protocol sees as its transport: flow control of the backend socket."""

    def __init__(self, connection: BackendConnection) -> None:
        self._connection = connection

    def pauseProducing(self) -> None:
        self._connection.client_paused = True
        if self._connection.transport is not None:
            self._connection.transport.pauseProducing()  # type: ignore[attr-defined]

    def resumeProducing(self) -> None:
        self._connection.client_paused = False
        self._connection.resume_reading()

    def stopProducing(self) -> None:
        self._connection.abort()

    def abortConnection(self) -> None:
        """What ``twisted.web.client.readBody`` calls when its read is cancelled."""
        self._connection.abort()


class _Exchange:
    """One request/response on a connection."""

    def __init__(self, method: bytes, data: bytes, reused: bool) -> None:
        self.method = method
        self.data = data
        self.reused = reused
        self.response_d: Deferred[IResponse] = Deferred(self._cancel)
        self.connection: BackendConnection | None = None
        self.received_any = False

    def _cancel(self, _: Deferred[IResponse]) -> None:
        if self.connection is not None:
            self.connection.abort()


class BackendConnection(Protocol):
    """One keep-alive connection to the backend, serving one exchange at a time."""

    def __init__(self, agent: BackendAgent) -> None:
        self._agent = agent
        self._buffer = b""
        self._exchange: _Exchange | None = None
        self._body: Any = None  # the protocol receiving the body
        self._pending_body: list[bytes] = []
        self._remaining: int | None = None  # Content-Length bytes left
        self._chunked = False
        self._chunk_state = _Chunked.SIZE_LINE
        self._chunk_left = 0  # bytes of chunk data left (in _Chunked.DATA)
        self._until_close = False
        self._keep_alive = True
        self._state = "idle"  # idle | head | body | closed
        self._idle_call: Any = None
        self.client_paused = False  # the client's socket is full (flow control)
        self._coalescing: Any = None  # the call that ends a burst's pause
        self._last_stream_read = -1.0

    # -- connection lifecycle -----------------------------------------------------------------
    def connectionMade(self) -> None:
        no_delay(self.transport)

    def send(self, exchange: _Exchange) -> None:
        self._cancel_idle_timer()
        self.client_paused = False
        self._last_stream_read = -1.0
        exchange.connection = self
        self._exchange = exchange
        self._state = "head"
        self._buffer = b""
        assert self.transport is not None
        write_now(self.transport, exchange.data)

    def abort(self) -> None:
        if self.transport is not None and self._state != "closed":
            self._keep_alive = False
            if self._state == "idle":
                # connectionLost comes an iteration later: until then the pool must not
                # hand this connection out (a request sent now would reach the backend
                # and then be reset)
                self._state = "closed"
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def resume_reading(self) -> None:
        """Read again, unless the client is still full or a burst is still being batched."""
        if self.transport is not None and not self.client_paused and self._coalescing is None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _batch_stream_reads(self, size: int) -> None:
        """After a small stream read close on the heels of another, wait for more to arrive."""
        now = self._agent.clock.seconds()
        last, self._last_stream_read = self._last_stream_read, now
        if size >= SMALL_READ or now - last >= STREAM_BURST_GAP or self._coalescing is not None:
            return
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._coalescing = self._agent.clock.callLater(STREAM_COALESCE, self._burst_waited)

    def _burst_waited(self) -> None:
        self._coalescing = None
        if self._state == "body":
            self.resume_reading()

    def _cancel_coalescing(self) -> None:
        if self._coalescing is not None and self._coalescing.active():
            self._coalescing.cancel()
        self._coalescing = None

    def _cancel_idle_timer(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def connectionLost(self, reason: Failure = RESPONSE_DONE) -> None:
        state = self._state
        self._keep_alive = False
        self._cancel_idle_timer()
        self._cancel_coalescing()
        self._agent.forget(self)
        if state == "body":
            # The body ends with the connection: cleanly only for a close-delimited body.
            if self._until_close and reason.check(ConnectionDone):
                self._end_body(Failure(PotentialDataLoss()))
            else:
                self._end_body(Failure(ResponseFailed([reason])))
        self._state = "closed"
        exchange, self._exchange = self._exchange, None
        if state == "head" and exchange is not None:
            if exchange.reused and not exchange.received_any and exchange.method in _RETRYABLE:
                self._agent.retry(exchange)
            elif not exchange.response_d.called:
                exchange.response_d.errback(ResponseNeverReceived([reason]))

    # -- response parsing ---------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._exchange is not None:
            self._exchange.received_any = True
        if self._state == "head":
            self._buffer += data
            self._parse_head()
        elif self._state == "body":
            self._body_data(data)
            if self._state == "body" and self._remaining is None and self._body is not None:
                self._batch_stream_reads(len(data))  # a chunked or close-delimited stream
        else:
            # Bytes nobody asked for: the connection is out of step; drop it.
            self.abort()

    def _parse_head(self) -> None:
        while self._state == "head":
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    self._fail_head(BackendProtocolError("response head too large"))
                return
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            try:
                self._start_response(head)
            except (ValueError, BackendProtocolError) as e:
                self._fail_head(BackendProtocolError(str(e)))
                return

    def _fail_head(self, error: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        self.abort()
        self._state = "closed"
        if exchange is not None and not exchange.response_d.called:
            exchange.response_d.errback(ResponseFailed([Failure(error)]))

    def _start_response(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, _, rest = lines[0].partition(b" ")
        code_text, _, phrase = rest.partition(b" ")
        if not version.startswith(b"HTTP/1.") or len(code_text) != 3 or not code_text.isdigit():
            raise BackendProtocolError("not an HTTP/1.x status line")
        code = int(code_text)
        if 100 <= code < 200:
            return  # an interim answer (100 Continue): the real one follows
        headers = Headers()
        length: int | None = None
        chunked = False
        transfer_encoded = False
        connection_header: list[bytes] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in b" \t" or name[:1] in b" \t":
                raise BackendProtocolError("malformed header line")
            value = value.strip()
            lower = name.lower()
            if lower not in _FRAMING_HEADERS:
                headers.addRawHeader(name, value)
                continue
            if lower == b"content-length":
                if length is not None and length != int(value):
                    raise BackendProtocolError("conflicting Content-Length")
                length = int(value)
                if length < 0:
                    raise BackendProtocolError("negative Content-Length")
                continue
            if lower == b"transfer-encoding":
                transfer_encoded = True
                chunked = value.lower().endswith(b"chunked")
                continue
            connection_header.append(value)  # the remaining special header: Connection
        exchange = self._exchange
        assert exchange is not None
        tokens = connection_tokens(connection_header)
        self._keep_alive = version == b"HTTP/1.1" and b"close" not in tokens
        if transfer_encoded:
            # RFC 9112 §6.3: Transfer-Encoding frames the body (chunked, else until close);
            # a Content-Length beside it is ignored, and the connection is not trusted again.
            if length is not None:
                self._keep_alive = False
            length = None
        no_body = exchange.method == b"HEAD" or code in NO_BODY_STATUS
        self._chunked = chunked and not no_body
        self._chunk_state = _Chunked.SIZE_LINE
        self._remaining = None if no_body or self._chunked else length
        self._until_close = not no_body and not self._chunked and length is None
        if self._until_close:
            self._keep_alive = False
        if no_body:
            self._remaining = 0
        response_length: int | object = (
            0 if no_body else (length if length is not None and not chunked else UNKNOWN_LENGTH)
        )
        self._state = "body"
        self._pending_body = [self._buffer] if self._buffer else []
        self._buffer = b""
        response = BackendResponse(self, code, phrase, headers, response_length, tokens)
        exchange.response_d.callback(response)
        # Hold the rest of the body until deliverBody, as Agent does. The proxy asks for it
        # within the callback above, so this pause (two epoll_ctl calls with its resume)
        # happens only for a consumer that waits.
        if self._state == "body" and self._body is None and self.transport is not None:
            self.transport.pauseProducing()  # type: ignore[attr-defined]

    def deliver_body(self, protocol: Any) -> None:
        self._body = protocol
        protocol.makeConnection(_BodyTransport(self))
        pending, self._pending_body = self._pending_body, []
        if self._remaining == 0 and not self._chunked:
            self._end_body(RESPONSE_DONE)
            return
        for data in pending:
            if self._state != "body":
                return
            self._body_data(data)
        if self._state == "body" and self.transport is not None:
            self.transport.resumeProducing()  # type: ignore[attr-defined]

    def _body_data(self, data: bytes) -> None:
        if self._body is None:
            self._pending_body.append(data)
            return
        if self._chunked:
            self._chunked_data(data)
        elif self._remaining is not None:
            piece, rest = data[: self._remaining], data[self._remaining :]
            self._remaining -= len(piece)
            if piece:
                self._body.dataReceived(piece)
            if self._remaining == 0:
                if rest:
                    self._keep_alive = False  # more than announced: not reusable
                self._end_body(RESPONSE_DONE)
        else:
            self._body.dataReceived(data)

    def _chunked_data(self, data: bytes) -> None:
        # An offset walks the buffer (no re-slicing per chunk: a read holds hundreds of
        # small SSE events), and the data of one read goes to the body in one piece.
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        pos, size = 0, len(buffer)
        pieces: list[bytes] = []
        try:
            while pos < size:
                if self._chunk_state is _Chunked.DATA:
                    take = min(self._chunk_left, size - pos)
                    pieces.append(buffer[pos : pos + take])
                    pos += take
                    self._chunk_left -= take
                    if self._chunk_left == 0:
                        self._chunk_state = _Chunked.DATA_END
                    continue
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_HEAD:
                        raise BackendProtocolError("chunk header too long")
                    self._buffer = buffer[pos:]
                    break
                line, pos = buffer[pos:end], end + 2
                if self._chunk_state is _Chunked.DATA_END:
                    if line:
                        raise BackendProtocolError("chunk data longer than its size")
                    self._chunk_state = _Chunked.SIZE_LINE
                elif self._chunk_state is _Chunked.TRAILERS:
                    if not line:  # the blank line after the last chunk (and any trailers)
                        if pos < size:
                            self._keep_alive = False
                        self._deliver(pieces)
                        self._end_body(RESPONSE_DONE)
                        return
                else:
                    self._chunk_left = _chunk_size(line)
                    self._chunk_state = _Chunked.DATA if self._chunk_left else _Chunked.TRAILERS
        except BackendProtocolError as e:
            self._deliver(pieces)
            self._keep_alive = False
            self._end_body(Failure(ResponseFailed([Failure(e)])))
            self.abort()
            return
        self._deliver(pieces)

    def _deliver(self, pieces: list[bytes]) -> None:
        if pieces and self._body is not None:
            self._body.dataReceived(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    def _end_body(self, reason: Failure) -> None:
        if self._state != "body":
            return
        body, self._body = self._body, None
        self._exchange = None
        self._cancel_coalescing()
        clean = reason.check(ResponseDone) is not None
        if clean and self._keep_alive:
            self._state = "idle"
            # A slow client may have paused the read; the next exchange needs it running.
            if self.transport is not None:
                self.transport.resumeProducing()  # type: ignore[attr-defined]
            self._agent.release(self)
        else:
            self._state = "closed"
            if self.transport is not None:
                self.transport.loseConnection()
        if body is not None:
            body.connectionLost(reason)

    def start_idle_timer(self, clock: Any, timeout: float) -> None:
        self._idle_call = clock.callLater(timeout, self.abort)


@implementer(IAgent)
class BackendAgent:
    """``IAgent`` for one backend origin, with a bounded pool of keep-alive connections.

    Requests go to ``url``'s origin whatever URI they name (only its path and query are
    used): the proxy never talks to anyone else.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        connect_timeout: float = 5.0,
        max_idle: int = 64,
        idle_timeout: float = 4.0,
        endpoint: Any = None,
    ) -> None:
        self._reactor = reactor
        host, port = backend_host_port(url)
        if endpoint is None:  # tests pass an in-memory one
            endpoint = tcp_endpoint(reactor, host, port, connect_timeout)
            if url.startswith("https:"):
                endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        self._endpoint = endpoint
        self._host_header = backend_host_header(url)
        self._idle: list[BackendConnection] = []
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._factory = Factory.forProtocol(lambda: BackendConnection(self))  # type: ignore[arg-type]
        self._factory.noisy = False

    @property
    def clock(self) -> Any:
        return self._reactor

    # -- IAgent ----------------------------------------------------------------------------------
    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        try:
            data = self._serialize(method, uri, headers, bodyProducer)
        except ValueError as e:
            return fail(e)
        idle = self._take_idle()
        exchange = _Exchange(method, data, reused=idle is not None)
        if idle is not None:
            idle.send(exchange)
        else:
            self._connect(exchange)
        return exchange.response_d

    def _serialize(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None,
        body_producer: IBodyProducer | None,
    ) -> bytes:
        target = _origin_form(uri)
        lines = [method + b" " + target + b" HTTP/1.1"]
        has_host = False
        # Headers already refuses line breaks in names and values (no injection here).
        for name, values in (headers or Headers()).getAllRawHeaders():
            lower = name.lower()
            if lower in _FRAMING_HEADERS:
                continue
            if lower == b"host":
                has_host = True
            for value in values:
                lines.append(name + b": " + value)
        if not has_host:
            lines.append(b"Host: " + self._host_header)
        body = _body_bytes(body_producer)
        if body is not None:
            lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
        lines.append(b"")
        lines.append(b"")
        return b"\r\n".join(lines) + (body or b"")

    # -- the pool ------------------------------------------------------------------------------
    def _take_idle(self) -> BackendConnection | None:
        while self._idle:
            connection = self._idle.pop()
            if connection.transport is not None and connection._state == "idle":
                return connection
        return None

    def _connect(self, exchange: _Exchange) -> None:
        connecting = self._endpoint.connect(self._factory)

        def connected(connection: BackendConnection) -> None:
            if exchange.response_d.called:  # cancelled while connecting
                connection.abort()
                return
            connection.send(exchange)

        def failed(reason: Failure) -> None:
            if not exchange.response_d.called:
                exchange.response_d.errback(reason)

        connecting.addCallbacks(connected, failed)

        def cancel_connect(_: object) -> None:
            if not connecting.called:
                connecting.cancel()

        exchange.response_d.addErrback(_on_cancel(cancel_connect))

    def retry(self, exchange: _Exchange) -> None:
        """The reused connection was closed under the request: once more, on a new one."""
        exchange.reused = False
        exchange.received_any = False
        exchange.connection = None
        self._connect(exchange)

    def release(self, connection: BackendConnection) -> None:
        if len(self._idle) >= self._max_idle:
            connection.abort()
            return
        self._idle.append(connection)
        connection.start_idle_timer(self._reactor, self._idle_timeout)

    def forget(self, connection: BackendConnection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def closeCachedConnections(self) -> Deferred[None]:
        """Close every idle connection (when the service stops)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.abort()
        return succeed(None)


_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})


_HEX_DIGITS = b"0123456789abcdefABCDEF"


def _chunk_size(line: bytes) -> int:
    """The size of a chunk-size line (``1a``, ``1a;ext=v``): hex digits only.

    ``int(x, 16)`` alone also takes ``0x1a``, ``1_a``, ``+1a`` and `` 1a``: a backend answer
    read differently here than the backend meant could desynchronise a pooled connection.
    """
    digits = line.split(b";", 1)[0].rstrip(b" \t")
    if not digits or len(digits) > 15 or digits.translate(None, _HEX_DIGITS):
        raise BackendProtocolError("bad chunk size")
    return int(digits, 16)


def _origin_form(uri: bytes) -> bytes:
    """``/path?query`` of an absolute or origin-form URI (the host is always the backend)."""
    if not uri.startswith(b"/"):
        authority = uri.find(b"//")
        slash = uri.find(b"/", authority + 2) if authority >= 0 else -1
        uri = uri[slash:] if slash >= 0 else b"/"
    return uri.partition(b"#")[0] or b"/"


def _on_cancel(action: Callable[[object], None]) -> Callable[[Failure], Failure]:
    def errback(failure: Failure) -> Failure:
        if failure.check(CancelledError):
            action(failure)
        return failure

    return errback


class _Collect:
    """A consumer that keeps what a synchronous body producer writes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


def _body_bytes(producer: IBodyProducer | None) -> bytes | None:
    """The whole body of an in-memory producer (the proxy has read and size-checked it)."""
    if producer is None:
        return None
    if isinstance(producer, BytesProducer):
        return producer.body
    collect = _Collect()
    done = producer.startProducing(collect)  # type: ignore[arg-type]
    if not done.called:
        raise ValueError("only in-memory request bodies are supported")
    return b"".join(collect.chunks)
