"""Request targets and Origins that could steer the relay elsewhere are refused."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from authproxy.http.cors import OriginPolicy, origin_of
from authproxy.proxy.resource import origin_form_target
from authproxy.testing.backend import ProxyHarness, proxy_config


class RequestTargetTests(SynchronousTestCase):
    def test_origin_form_table(self) -> None:
        table = {
            b"/mcp": b"/mcp",
            b"/mcp?a=1": b"/mcp?a=1",
            b"//evil.example/x": b"//evil.example/x",  # a path on the backend, not a host
            b"http://mcp.example.com/mcp?q=1": b"/mcp?q=1",
            b"HTTPS://mcp.example.com": b"/",
            b".evil.example/x": None,
            b":8081/x": None,
            b"@evil.example/x": None,
            b"*": None,
            b"evil.example:443": None,
            b"http://[::1/x": None,
        }
        for target, expected in table.items():
            self.assertEqual(origin_form_target(target), expected, target)

    def test_host_changing_target_is_answered_400_and_never_relayed(self) -> None:
        h = ProxyHarness(proxy_config(backend={"url": "http://backend.internal"}))
        site = Site(h.root, reactor=h.clock)
        for target in (b".evil.example/x", b":8081/x", b"@evil.example/x"):
            channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4321))
            channel.callLater = h.clock.callLater  # type: ignore[union-attr]
            transport = StringTransport()
            channel.makeConnection(transport)
            channel.dataReceived(  # type: ignore[union-attr]
                b"POST " + target + b" HTTP/1.1\r\nHost: mcp.example.com\r\n"
                b"Authorization: Bearer " + h.token().encode() + b"\r\n"
                b"Content-Length: 2\r\n\r\n{}"
            )
            h.flush()
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), transport.value())
            channel.connectionLost(None)  # type: ignore[union-attr]
        self.assertEqual(h.backend.received, [])


class MalformedOriginTests(SynchronousTestCase):
    def test_unparsable_origins_are_refused_not_crashing(self) -> None:
        policy = OriginPolicy.from_config("https://mcp.example.com", ())
        for origin in (b"http://[::1", b"http://x:99999", b"\xff", b"null"):
            self.assertFalse(policy.permits(origin), origin)
        self.assertTrue(policy.permits(b"https://mcp.example.com"))
        self.assertEqual(origin_of("http://[::1"), "")
