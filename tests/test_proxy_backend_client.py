"""The backend client: HTTP/1.1 framing, keep-alive reuse, retries and failures (in memory);
requests sent at once on real sockets."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import CancelledError, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseDone, ResponseFailed, ResponseNeverReceived, readBody
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH

from authproxy.proxy.backend_client import (
    SMALL_READ,
    STREAM_BURST_GAP,
    STREAM_COALESCE,
    BackendAgent,
    BytesProducer,
)


class MemoryEndpoint:
    """Connects each factory protocol to a StringTransport the test can read and answer."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> Any:
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return succeed(protocol)


_DONE = Failure(ResponseDone())


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = _DONE) -> None:
        self.reason = reason


class BackendClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = MemoryEndpoint()
        self.agent = BackendAgent(self.clock, "http://127.0.0.1:9000", endpoint=self.endpoint)

    def send(self, method: bytes = b"POST", body: bytes | None = b"{}") -> Any:
        producer = BytesProducer(body) if body is not None else None
        headers = Headers({b"Content-Type": [b"application/json"]})
        return self.agent.request(method, b"http://127.0.0.1:9000/mcp?x=1", headers, producer)

    def answer(self, data: bytes, index: int = -1) -> tuple[Any, StringTransport]:
        protocol, transport = self.endpoint.connections[index]
        protocol.dataReceived(data)
        return protocol, transport

    def body_of(self, d: Any) -> Collect:
        self.response = self.successResultOf(d)
        collect = Collect()
        self.response.deliverBody(collect)
        return collect

    def test_request_bytes_and_content_length_response_then_reuse(self) -> None:
        d = self.send()
        _, transport = self.endpoint.connections[0]
        written = transport.value()
        self.assertTrue(written.startswith(b"POST /mcp?x=1 HTTP/1.1\r\n"), written)
        self.assertIn(b"Host: 127.0.0.1:9000\r\n", written)
        self.assertIn(b"Content-Length: 2\r\n", written)
        self.assertTrue(written.endswith(b"\r\n\r\n{}"))
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Custom: a\r\n\r\nhel")
        response = self.successResultOf(d)
        self.assertEqual((response.code, response.phrase, response.length), (200, b"OK", 5))
        self.assertEqual(response.headers.getRawHeaders(b"x-custom"), [b"a"])
        self.assertIsNone(response.headers.getRawHeaders(b"content-length"))
        collect = Collect()
        response.deliverBody(collect)
        self.answer(b"lo")
        self.assertEqual(collect.data, b"hello")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseDone))
        transport.clear()
        self.send(b"GET", None)
        self.assertEqual(len(self.endpoint.connections), 1, "the connection was reused")
        self.assertTrue(transport.value().startswith(b"GET /mcp?x=1 HTTP/1.1\r\n"))

    def test_body_is_held_until_a_waiting_consumer_asks_for_it(self) -> None:
        d = self.send()
        protocol, transport = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
        self.assertEqual(transport.producerState, "paused", "reading stops until deliverBody")
        protocol.dataReceived(b"cd")
        collect = self.body_of(d)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(collect.data, b"abcd")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseDone))

    def test_consumer_asking_at_once_never_pauses_the_connection(self) -> None:
        d = self.send()
        collect = Collect()
        states: list[str] = []

        def deliver(response: Any) -> None:
            response.deliverBody(collect)
            states.append(transport.producerState)

        d.addCallback(deliver)
        _, transport = self.endpoint.connections[0]
        transport.pauseProducing = lambda: states.append("pause requested")  # type: ignore[method-assign]
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(states, ["producing"])
        self.assertEqual(collect.data, b"ok")

    def test_chunked_split_at_every_byte(self) -> None:
        wire = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: text/event-stream\r\n\r\n"
            b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\n"
        )
        for cut in range(1, len(wire)):
            self.endpoint.connections.clear()
            self.agent._idle.clear()
            d = self.send()
            self.answer(wire[:cut])
            if cut < wire.index(b"\r\n\r\n") + 4:
                self.assertNoResult(d)
                self.answer(wire[cut:])
                collect = self.body_of(d)
            else:
                collect = self.body_of(d)
                self.answer(wire[cut:])
            self.assertEqual(collect.data, b"hello, world", cut)
            assert collect.reason is not None
            self.assertTrue(collect.reason.check(ResponseDone), cut)
            self.assertEqual(self.response.length, UNKNOWN_LENGTH)

    def open_stream(self) -> tuple[Any, StringTransport, Collect]:
        d = self.send(b"GET", None)
        protocol, transport = self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        return protocol, transport, self.body_of(d)

    def test_a_burst_of_small_stream_reads_is_read_in_batches(self) -> None:
        protocol, transport, collect = self.open_stream()
        protocol.dataReceived(b"4\r\nabcd\r\n")
        self.assertEqual(transport.producerState, "producing", "one read is not a burst")
        protocol.dataReceived(b"4\r\nefgh\r\n")
        self.assertEqual(transport.producerState, "paused", "two small reads at once are")
        self.assertEqual(collect.data, b"abcdefgh", "what was read is relayed at once")
        self.clock.advance(STREAM_COALESCE)
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"0\r\n\r\n")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseDone))
        self.assertEqual(self.clock.getDelayedCalls(), [self.agent._idle[0]._idle_call])

    def test_slow_streams_large_reads_and_known_lengths_are_never_held(self) -> None:
        protocol, transport, collect = self.open_stream()
        for _ in range(3):  # a stream slower than one read per burst gap
            protocol.dataReceived(b"1\r\nx\r\n")
            self.clock.advance(STREAM_BURST_GAP)
            self.assertEqual(transport.producerState, "producing")
        large = b"%x\r\n%s\r\n" % (SMALL_READ, b"y" * SMALL_READ)
        protocol.dataReceived(large)
        protocol.dataReceived(large)  # back to back, but each read already a batch
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(len(collect.data), 3 + 2 * SMALL_READ)

        d = self.send(b"GET", None)
        protocol, transport = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
        collect = self.body_of(d)
        protocol.dataReceived(b"ab")
        protocol.dataReceived(b"c")
        self.assertEqual(transport.producerState, "producing", "a body of known length")

    def test_a_full_client_keeps_the_stream_paused_after_the_burst(self) -> None:
        protocol, transport, collect = self.open_stream()
        protocol.dataReceived(b"1\r\na\r\n")
        protocol.dataReceived(b"1\r\nb\r\n")
        body_transport = collect.transport
        assert body_transport is not None
        body_transport.pauseProducing()  # the client's socket is full
        body_transport.resumeProducing()  # ... drained, while the burst still waits
        self.assertEqual(transport.producerState, "paused")
        body_transport.pauseProducing()
        self.clock.advance(STREAM_COALESCE)
        self.assertEqual(transport.producerState, "paused", "the client is still full")
        body_transport.resumeProducing()
        self.assertEqual(transport.producerState, "producing")

    def test_a_stream_cancelled_during_a_burst_leaves_no_timer(self) -> None:
        protocol, transport, collect = self.open_stream()
        protocol.dataReceived(b"1\r\na\r\n")
        protocol.dataReceived(b"1\r\nb\r\n")
        assert collect.transport is not None
        collect.transport.stopProducing()
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_close_delimited_body_ends_with_potential_data_loss(self) -> None:
        d = self.send()
        protocol, _ = self.answer(b"HTTP/1.0 200 OK\r\n\r\npartial")
        collect = self.body_of(d)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(collect.data, b"partial")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(PotentialDataLoss))
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2, "not reused")

    def test_connection_close_is_not_reused(self) -> None:
        d = self.send()
        self.answer(b"HTTP/1.1 200 OK\r\nConnection: close, X-Hop\r\nContent-Length: 0\r\n\r\n")
        self.body_of(d)
        self.assertEqual(self.response.connection_tokens, frozenset({b"close", b"x-hop"}))
        self.send()
        self.assertEqual(len(self.endpoint.connections), 2)

    def test_no_body_statuses_and_interim_answers(self) -> None:
        d = self.send()
        self.answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
        collect = self.body_of(d)
        self.assertEqual((self.response.code, collect.data), (204, b""))
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseDone))
        head = self.send(b"HEAD", None)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
        self.assertEqual(self.body_of(head).data, b"")

    def test_backend_dies_mid_body(self) -> None:
        d = self.send()
        protocol, _ = self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc")
        collect = self.body_of(d)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(collect.data, b"abc")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseFailed))

    def test_idempotent_request_retried_when_reused_connection_was_closed(self) -> None:
        first = self.send(b"GET", None)
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.body_of(first)
        again = self.send(b"GET", None)
        stale, _ = self.endpoint.connections[0]
        stale.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(self.endpoint.connections), 2, "retried on a new connection")
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(self.body_of(again).data, b"ok")

    def test_post_on_closed_reused_connection_is_not_retried(self) -> None:
        first = self.send()
        self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.body_of(first)
        again = self.send()
        stale, _ = self.endpoint.connections[0]
        stale.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(again, ResponseNeverReceived)
        self.assertEqual(len(self.endpoint.connections), 1)

    def test_malformed_answers_fail(self) -> None:
        for wire in (
            b"garbage\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ):
            d = self.send()
            _, transport = self.answer(wire)
            self.failureResultOf(d, ResponseFailed)
            self.assertTrue(transport.disconnecting or transport.disconnected, wire)

    def test_bad_chunk_framing_ends_the_body_and_drops_the_connection(self) -> None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for framing in (
            b"0x2\r\nok\r\n0\r\n\r\n",  # int(..., 16) would take these four
            b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
            b"+2\r\nok\r\n0\r\n\r\n",
            b" 2\r\nok\r\n0\r\n\r\n",
            b"\r\nok\r\n0\r\n\r\n",
            b"2\r\nokay\r\n0\r\n\r\n",  # more data than the size said
            b"2\r\nok",  # ... noticed once the bytes after the data arrive:
        ):
            d = self.send()
            protocol, transport = self.answer(head)
            collect = self.body_of(d)
            protocol.dataReceived(framing)
            if framing == b"2\r\nok":
                self.assertIsNone(collect.reason)
                protocol.dataReceived(b"ay\r\n")
            assert collect.reason is not None, framing
            self.assertTrue(collect.reason.check(ResponseFailed), framing)
            self.assertTrue(transport.disconnecting or transport.disconnected, framing)

    def test_chunk_size_with_extension_and_trailing_space(self) -> None:
        d = self.send()
        protocol, _ = self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        collect = self.body_of(d)
        protocol.dataReceived(b"A \t;name=value\r\n0123456789\r\n2\r\nab\r\n0\r\n\r\n")
        self.assertEqual(collect.data, b"0123456789ab")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(ResponseDone))

    def test_transfer_encoding_wins_over_content_length_and_the_connection_is_dropped(
        self,
    ) -> None:
        # RFC 9112 §6.3: chunked framing, and the connection is a smuggling risk: not reused.
        for order in (
            b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        ):
            self.endpoint.connections.clear()
            d = self.send()
            protocol, transport = self.answer(b"HTTP/1.1 200 OK\r\n" + order + b"\r\n")
            collect = self.body_of(d)
            self.assertEqual(self.response.length, UNKNOWN_LENGTH)
            protocol.dataReceived(b"5\r\nhello\r\n0\r\n\r\n")
            self.assertEqual(collect.data, b"hello")
            assert collect.reason is not None
            self.assertTrue(collect.reason.check(ResponseDone))
            self.assertTrue(transport.disconnecting or transport.disconnected, order)
            self.send(b"GET", None)
            self.assertEqual(len(self.endpoint.connections), 2, "not reused")

    def test_non_chunked_transfer_encoding_reads_until_close(self) -> None:
        d = self.send()
        protocol, transport = self.answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n"
        )
        collect = self.body_of(d)
        protocol.dataReceived(b"more than two")
        self.assertIsNone(collect.reason)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(collect.data, b"more than two")
        assert collect.reason is not None
        self.assertTrue(collect.reason.check(PotentialDataLoss))

    def test_cancel_aborts_the_connection(self) -> None:
        d = self.send()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        _, transport = self.endpoint.connections[0]
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_stop_producing_aborts_and_idle_connections_time_out(self) -> None:
        d = self.send()
        _, transport = self.answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        collect = self.body_of(d)
        collect.transport.stopProducing()  # type: ignore[union-attr]
        self.assertTrue(transport.disconnecting or transport.disconnected)
        ok = self.send(b"GET", None)
        _, second = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.body_of(ok)
        self.assertFalse(second.disconnecting)
        self.clock.advance(5)
        self.assertTrue(second.disconnecting or second.disconnected)

    def test_connection_aborted_while_idle_is_not_handed_out(self) -> None:
        ok = self.send(b"GET", None)
        _, first = self.answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.body_of(ok)
        sent = first.value()
        self.clock.advance(5)  # the idle timer aborts it; connectionLost is still to come
        self.send(b"POST", b"{}")
        self.assertEqual(len(self.endpoint.connections), 2)
        self.assertEqual(first.value(), sent)  # nothing more went to the aborted connection

    def test_header_injection_impossible(self) -> None:
        headers = Headers({b"X-Evil": [b"a\r\nInjected: yes"]})
        self.agent.request(b"GET", b"/x", headers)
        _, transport = self.endpoint.connections[0]
        self.assertNotIn(b"\r\nInjected", transport.value())


class RequestsLeaveAtOnce(TestCase):
    """On real loopback sockets: a request is on the wire when ``request`` returns, and a
    request too big for the socket buffer falls back to the transport without reordering."""

    def setUp(self) -> None:
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.addCleanup(self.server.close)
        self.agent = BackendAgent(reactor, f"http://127.0.0.1:{self.server.getsockname()[1]}")
        self.addCleanup(self.agent.closeCachedConnections)

    async def accept(self) -> socket.socket:
        conn, _ = await threads.deferToThread(self.server.accept)
        conn.settimeout(10)
        self.addCleanup(conn.close)
        return conn

    async def exchange(self, conn: socket.socket, target: bytes, body: bytes = b"") -> None:
        """Send one request, check its bytes at the server, answer it, read the answer."""
        producer = BytesProducer(body) if body else None
        pending = self.agent.request(b"POST" if body else b"GET", target, Headers(), producer)
        head, rest = await threads.deferToThread(_read_request, conn, len(body))
        self.assertTrue(
            head.startswith(b"%s %s HTTP/1.1\r\n" % (b"POST" if body else b"GET", target))
        )
        self.assertEqual(rest, body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        response = await pending
        self.assertEqual(await readBody(response), b"ok")

    async def test_request_is_sent_before_the_reactor_runs_again(self) -> None:
        first = self.agent.request(b"GET", b"/one", Headers())
        conn = await self.accept()
        await threads.deferToThread(_read_request, conn, 0)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await readBody(await first)
        conn.setblocking(False)
        # The connection is idle in the pool: the next request must reach the server socket
        # with no reactor iteration in between (loopback delivers within send()).
        second = self.agent.request(b"GET", b"/two", Headers())
        self.assertTrue(conn.recv(65536).startswith(b"GET /two HTTP/1.1\r\n"))
        conn.setblocking(True)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(await readBody(await second), b"ok")

    async def test_large_request_then_more_requests_stay_in_order(self) -> None:
        accepted = threads.deferToThread(self.server.accept)
        big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than the socket buffers hold
        pending = self.agent.request(b"POST", b"/big", Headers(), BytesProducer(big))
        conn, _ = await accepted
        conn.settimeout(10)
        self.addCleanup(conn.close)
        head, rest = await threads.deferToThread(_read_request, conn, len(big))
        self.assertTrue(head.startswith(b"POST /big HTTP/1.1\r\n"))
        self.assertEqual(rest, big)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(await readBody(await pending), b"ok")
        for n in range(3):
            await self.exchange(conn, b"/after-%d" % n, b"x" * (n * 1000))


def _read_request(conn: socket.socket, body_length: int) -> tuple[bytes, bytes]:
    """(head, body) of one request read off a blocking server socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the request head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    while len(rest) < body_length:
        chunk = conn.recv(1024 * 1024)
        if not chunk:
            raise ConnectionError("closed before the request body")
        rest += chunk
    return head, rest
