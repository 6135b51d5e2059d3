"""LimitedRequest: oversized bodies are refused with 413 before they are buffered."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from authproxy.http.request import make_request_factory


class Recorder(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request) -> bytes:  # type: ignore[no-untyped-def]
        self.bodies.append(request.content.read())
        return b"ok"


class LimitedRequestTests(SynchronousTestCase):
    def connect(self, limit: int = 10) -> tuple[Recorder, StringTransport, object]:
        resource = Recorder()
        clock = Clock()
        site = Site(resource, requestFactory=make_request_factory(limit), reactor=clock)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        # The channel's idle timeout must run on the test clock, not the global reactor
        # (where it would outlive this test and dirty the next real-reactor TestCase).
        channel.callLater = clock.callLater  # type: ignore[union-attr]
        transport = StringTransport()
        channel.makeConnection(transport)
        return resource, transport, channel

    def test_declared_length_refused_at_headers(self) -> None:
        resource, transport, channel = self.connect()
        channel.dataReceived(  # type: ignore[attr-defined]
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        written = transport.value()
        self.assertTrue(written.startswith(b"HTTP/1.1 413 "), written)
        self.assertNotIn(b"100 Continue", written)
        self.assertIn(b'"error":"request_too_large"', written)
        # The body that follows is not buffered, and nothing is rendered.
        channel.dataReceived(b"x" * 5)  # type: ignore[attr-defined]
        self.assertEqual(resource.bodies, [])

    def test_small_refused_body_closes_connection(self) -> None:
        resource, transport, channel = self.connect()
        channel.dataReceived(  # type: ignore[attr-defined]
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n" + b"x" * 11
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(resource.bodies, [])

    def test_chunked_body_counted_while_arriving(self) -> None:
        resource, transport, channel = self.connect()
        channel.dataReceived(  # type: ignore[attr-defined]
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n"
        )
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"8\r\n12345678\r\n")  # type: ignore[attr-defined]
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))
        channel.dataReceived(b"0\r\n\r\n")  # type: ignore[attr-defined]
        self.assertTrue(transport.disconnecting)
        self.assertEqual(resource.bodies, [])

    def test_within_limit_served(self) -> None:
        resource, transport, channel = self.connect()
        channel.dataReceived(  # type: ignore[attr-defined]
            b"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
        self.assertEqual(resource.bodies, [b"0123456789"])
