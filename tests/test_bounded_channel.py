"""Connections bounded in time and number: slowloris, idle keep-alive, oversized heads, caps.

A real AuthproxySite on a test clock, each connection an in-memory transport; two of the
attacks again over loopback sockets (``OnLoopback``).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from authproxy.http.connection_limits import ConnectionLimits, source_key
from authproxy.http.request import LimitedRequest
from authproxy.http.responses import TrustedProxies
from authproxy.http.site import AuthproxySite

PEER = IPv4Address("TCP", "203.0.113.5", 40000)
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class HalfClosingTransport(StringTransport):
    """A StringTransport that can half-close, like a TCP transport."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


@implementer(ISSLTransport)
class TLSTransport(HalfClosingTransport):
    """Like a TLS wrapper: loseWriteConnection reaches the socket beneath (not to be used)."""

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class Paths(Resource):
    """``/stream`` starts an endless response; everything else answers ``ok``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[Request] = []

    def render(self, request: Request) -> Any:
        if request.path == b"/stream":
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(b"")
            self.streams.append(request)
            return NOT_DONE_YET
        return b"ok"


class ChannelTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Paths()
        self.site = AuthproxySite(self.resource, reactor=self.clock, requestFactory=LimitedRequest)
        self.site.header_timeout = 10.0
        self.site.idle_timeout = 60.0

    def connect(self, peer: Any = PEER) -> tuple[Any, HalfClosingTransport]:
        channel = self.site.buildProtocol(peer)
        transport = HalfClosingTransport(peerAddress=peer)
        channel.makeConnection(transport)
        return channel, transport

    def closed(self, transport: HalfClosingTransport) -> bool:
        return transport.write_closed or transport.disconnecting


class SlowHeadTests(ChannelTestCase):
    """The slowloris attack: a head trickled in, a byte every few seconds."""

    def test_slowloris_head_is_closed_after_header_timeout(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        for _ in range(30):  # 60 s of one header byte every 2 s: each byte used to reset
            if self.closed(transport):
                break
            self.clock.advance(2)
            channel.dataReceived(b"X")
        self.assertTrue(self.closed(transport))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "), transport.value())
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertLessEqual(self.clock.seconds(), 10)

    def test_silent_connection_is_closed_after_header_timeout(self) -> None:
        _, transport = self.connect()
        self.clock.advance(9.9)
        self.assertFalse(self.closed(transport))
        self.clock.advance(0.2)
        self.assertTrue(self.closed(transport))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_head_split_over_packets_in_time_is_served(self) -> None:
        channel, transport = self.connect()
        for part in (b"GET / HT", b"TP/1.1\r\nHost:", b" x\r\n", b"\r\n"):
            self.clock.advance(2)
            channel.dataReceived(part)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertFalse(self.closed(transport))

    def test_next_head_on_a_kept_alive_connection_has_its_own_deadline(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(GET)
        transport.clear()
        self.clock.advance(30)  # idle, under idle_timeout
        channel.dataReceived(b"GET / HTTP/1.1\r\n")
        self.clock.advance(9)
        channel.dataReceived(b"X-Slow: 1\r\n")
        self.assertFalse(self.closed(transport))
        self.clock.advance(1.1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))

    def test_refusal_lingers_then_aborts(self) -> None:
        """The answer is followed by a half close; input is drained, not left to reset it."""
        channel, transport = self.connect()
        self.clock.advance(11)
        self.assertTrue(transport.write_closed)
        self.assertFalse(transport.aborted)
        channel.dataReceived(b"late bytes\r\n\r\n")  # read and thrown away
        self.assertEqual(transport.value().count(b"HTTP/1.1"), 1)
        self.clock.advance(2.1)
        self.assertTrue(transport.aborted)

    def test_no_half_close_under_tls(self) -> None:
        """A TLS wrapper would pass a half close to the socket beneath, cutting off the answer
        still inside the TLS layer: TLS connections close through TLS."""
        peer = PEER
        channel = self.site.buildProtocol(peer)
        transport = TLSTransport(peerAddress=peer)
        channel.makeConnection(transport)
        self.clock.advance(11)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertFalse(transport.write_closed)
        self.assertTrue(transport.disconnecting)


class IdleTests(ChannelTestCase):
    def test_idle_keep_alive_connection_closed_after_idle_timeout(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(GET)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        transport.clear()
        self.clock.advance(59)
        self.assertFalse(self.closed(transport))
        self.clock.advance(2)
        self.assertTrue(self.closed(transport))
        self.assertEqual(transport.value(), b"")  # closed quietly, no 408

    def test_streaming_response_is_never_timed_out(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        [stream] = self.resource.streams
        for _ in range(10 * 60):  # ten hours, one event a minute
            self.clock.advance(60)
            stream.write(b"data: tick\n\n")
        self.assertFalse(self.closed(transport))
        stream.finish()
        # The stream is over: the connection is idle and its timeout runs again.
        self.clock.advance(61)
        self.assertTrue(self.closed(transport))


class OversizedHeadTests(ChannelTestCase):
    def test_head_over_16k_gets_431(self) -> None:
        channel, transport = self.connect()
        headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20))
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            transport.value()[:60],
        )
        self.assertIn(b"Connection: close\r\n", transport.value())
        self.assertTrue(self.closed(transport))

    def test_one_header_line_over_16k_gets_431(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value()[:60])

    def test_too_many_header_lines_get_431(self) -> None:
        channel, transport = self.connect()
        headers = b"".join(b"X-%d: 1\r\n" % i for i in range(600))
        channel.dataReceived(b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value()[:60])

    def test_request_line_over_16k_gets_414(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "), transport.value()[:60])
        self.assertTrue(self.closed(transport))

    def test_malformed_request_still_gets_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertTrue(self.closed(transport))


class ConnectionCapTests(ChannelTestCase):
    def limited(self, total: int = 100, per_source: int = 3, **kwargs: Any) -> None:
        self.site.limits = ConnectionLimits(total, per_source, **kwargs)

    def test_connections_beyond_the_per_source_cap_get_503(self) -> None:
        self.limited(per_source=3)
        held = [self.connect() for _ in range(3)]
        channel, transport = self.connect()
        answer = transport.value()
        self.assertTrue(answer.startswith(b"HTTP/1.1 503 "), answer)
        self.assertIn(b"Retry-After: ", answer)
        self.assertIn(b"Connection: close\r\n", answer)
        self.assertTrue(self.closed(transport))
        channel.dataReceived(GET)  # never served
        self.assertEqual(transport.value(), answer)
        # Another source is not affected; a closed connection frees its slot.
        _, other = self.connect(IPv4Address("TCP", "198.51.100.7", 1))
        self.assertEqual(other.value(), b"")
        held[0][0].connectionLost(None)
        _, again = self.connect()
        self.assertEqual(again.value(), b"")

    def test_refused_connection_does_not_count(self) -> None:
        self.limited(per_source=1)
        self.connect()
        refused, _ = self.connect()
        refused.connectionLost(None)
        limits = self.site.limits
        assert limits is not None
        self.assertEqual((limits.total, limits.held_by(PEER.host)), (1, 1))

    def test_ipv6_sources_grouped_by_64(self) -> None:
        self.limited(per_source=2)
        self.connect(IPv6Address("TCP", "2001:db8:1:2::1", 1))
        self.connect(IPv6Address("TCP", "2001:db8:1:2:ffff::9", 1))
        _, third = self.connect(IPv6Address("TCP", "2001:db8:1:2:aaaa::3", 1))
        self.assertTrue(third.value().startswith(b"HTTP/1.1 503 "))
        _, other64 = self.connect(IPv6Address("TCP", "2001:db8:1:3::1", 1))
        self.assertEqual(other64.value(), b"")

    def test_trusted_proxy_is_exempt_from_the_per_source_cap(self) -> None:
        self.limited(per_source=1, trusted=TrustedProxies.from_cidrs(["10.0.0.0/8"]))
        balancer = IPv4Address("TCP", "10.1.2.3", 1)
        transports = [self.connect(balancer)[1] for _ in range(5)]
        self.assertEqual([t.value() for t in transports], [b""] * 5)

    def test_total_cap_keeps_a_reserve_for_probes(self) -> None:
        self.limited(total=6, per_source=100, reserve=2)
        for i in range(4):
            self.connect(IPv4Address("TCP", f"192.0.2.{i}", 1))
        # The last two connections serve only /health and /ready, one request each.
        probe, probe_transport = self.connect()
        probe.dataReceived(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(probe_transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertIn(b"Connection: close", probe_transport.value())
        self.assertTrue(self.closed(probe_transport))
        other, other_transport = self.connect(IPv4Address("TCP", "192.0.2.99", 1))
        other.dataReceived(b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        self.assertTrue(other_transport.value().startswith(b"HTTP/1.1 503 "))
        # Beyond the total: refused at once.
        _, beyond = self.connect(IPv4Address("TCP", "192.0.2.100", 1))
        self.assertTrue(beyond.value().startswith(b"HTTP/1.1 503 "))


class SourceKeyTests(SynchronousTestCase):
    def test_source_keys(self) -> None:
        self.assertEqual(source_key("192.0.2.1"), "192.0.2.1")
        self.assertEqual(source_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(source_key("2001:db8::1"), "2001:db8::/64")
        self.assertEqual(source_key("fe80::1%eth0"), "fe80::/64")
        self.assertEqual(source_key("/run/sock"), "/run/sock")


def _trickle_until_closed(sock: socket.socket, pause: float) -> bytes:
    """Slowloris: a header byte every ``pause`` seconds until the server closes; its answer."""
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    received = b""
    for _ in range(200):
        try:
            sock.sendall(b"X")
        except OSError:
            break
        sock.settimeout(pause)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    return received


def _send_and_read_all(sock: socket.socket, data: bytes) -> bytes:
    try:
        sock.sendall(data)
    except OSError:
        pass
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


class OnLoopback(TestCase):
    """The same attacks over real sockets and the real reactor (small timeouts)."""

    def serve(self) -> socket.socket:
        site = AuthproxySite(Paths(), requestFactory=LimitedRequest)
        site.header_timeout = 0.5
        port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        client.settimeout(10)
        self.addCleanup(client.close)
        return client

    async def test_slowloris_connection_closed_with_408(self) -> None:
        client = self.serve()
        received = await threads.deferToThread(_trickle_until_closed, client, 0.1)
        self.assertTrue(received.startswith(b"HTTP/1.1 408 "), received)

    async def test_oversized_head_answered_431_not_reset(self) -> None:
        client = self.serve()
        head = b"GET / HTTP/1.1\r\n" + (b"X-Filler: " + b"a" * 100 + b"\r\n") * 1000  # 110 KB
        received = await threads.deferToThread(_send_and_read_all, client, head)
        self.assertTrue(received.startswith(b"HTTP/1.1 431 "), received[:80])
