"""The bearer check at header time: no proxied body is read for a request without a valid token.

The proxy (ProxyHarness: real guard, key ring and fake backend) behind a real AuthproxySite,
driven byte by byte through an in-memory transport.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.http.request import make_request_factory
from authproxy.http.site import AuthproxySite
from authproxy.proxy.early import BodyGate
from authproxy.testing.backend import ProxyHarness, proxy_config

FOUR_MIB = 4 * 1024 * 1024
HEAD = b"POST /mcp HTTP/1.1\r\nHost: mcp.example.com\r\nContent-Type: application/json\r\n"


class FormEndpoint(Resource):
    """Stands in for an authorization-server endpoint: reads its own (unauthenticated) body."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.bodies.append(request.content.read())
        return b"{}"


class EarlyBearerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ProxyHarness(proxy_config(auth_server={"required_scopes": ["profile"]}))
        self.form = FormEndpoint()
        self.h.root.mount("/oauth/token", self.form)
        self.requests: list[Request] = []
        base = make_request_factory(FOUR_MIB)
        seen = self.requests

        class Recording(base):  # type: ignore[valid-type,misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                seen.append(self)

        self.site = AuthproxySite(self.h.root, reactor=self.h.clock, requestFactory=Recording)
        self.site.head_check = BodyGate(self.h.root.route_name, self.h.proxy.guard)

    def connect(self) -> tuple[Any, StringTransport]:
        peer = IPv4Address("TCP", "203.0.113.5", 40000)
        channel = self.site.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        channel.makeConnection(transport)
        return channel, transport

    def buffered(self) -> int:
        """The most any request buffered of its body."""
        sizes = [0]
        for request in self.requests:
            content = request.content
            if content is not None and not content.closed:
                content.seek(0, 2)
                sizes.append(content.tell())
        return max(sizes)

    def send_big_body(self, channel: Any, head: bytes) -> None:
        channel.dataReceived(head)
        for _ in range(64):  # 4 MiB, in 64 KiB pieces
            channel.dataReceived(b"x" * 65536)

    def split(self, answer: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
        return status, headers, body

    def test_tokenless_4mib_post_answered_401_before_its_body(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(HEAD + b"Content-Length: %d\r\n\r\n" % FOUR_MIB)
        status, headers, body = self.split(transport.value())
        self.assertEqual(status, b"HTTP/1.1 401 Unauthorized")
        self.assertTrue(headers[b"www-authenticate"].startswith(b"Bearer "))
        self.assertIn(b"resource_metadata=", headers[b"www-authenticate"])
        self.assertEqual(headers[b"connection"], b"close")
        self.assertIn(b'"error":"unauthorized"', body)
        for _ in range(64):
            channel.dataReceived(b"x" * 65536)
        self.assertEqual(self.buffered(), 0)
        self.assertEqual(self.h.backend.received, [])
        self.assertEqual(transport.value().count(b"HTTP/1.1 "), 1)

    def test_same_challenge_as_the_guard_gives_without_a_body(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(HEAD + b"Content-Length: %d\r\n\r\n" % FOUR_MIB)
        early = self.split(transport.value())
        other, plain = self.connect()
        other.dataReceived(b"GET /mcp HTTP/1.1\r\nHost: mcp.example.com\r\n\r\n")
        usual = self.split(plain.value())
        self.assertEqual(early[0], usual[0])
        self.assertEqual(early[1][b"www-authenticate"], usual[1][b"www-authenticate"])
        self.assertEqual(early[2], usual[2])
        self.assertNotIn(b"connection", usual[1])  # without a body: kept alive as before

    def test_expect_100_continue_gets_the_401_instead(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            HEAD + b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % FOUR_MIB
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "))
        self.assertNotIn(b"100 Continue", transport.value())

    def test_chunked_tokenless_body_never_buffered(self) -> None:
        channel, transport = self.connect()
        self.send_big_body(channel, HEAD + b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "))
        self.assertEqual(self.buffered(), 0)

    def test_forged_token_refused_before_its_body(self) -> None:
        forged = self.h.token()[:-4] + "AAAA"
        channel, transport = self.connect()
        self.send_big_body(
            channel,
            HEAD
            + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
            % (forged.encode(), FOUR_MIB),
        )
        status, headers, _ = self.split(transport.value())
        self.assertEqual(status, b"HTTP/1.1 401 Unauthorized")
        self.assertIn(b'error="invalid_token"', headers[b"www-authenticate"])
        self.assertEqual(self.buffered(), 0)

    def test_expired_token_refused_before_its_body(self) -> None:
        expired = self.h.token(exp=int(self.h.clock.seconds()) - 3600)
        channel, transport = self.connect()
        channel.dataReceived(
            HEAD + b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n" % expired.encode()
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "))

    def test_token_without_required_scope_refused_before_its_body(self) -> None:
        token = self.h.token(scope="openid", scp=None)
        channel, transport = self.connect()
        channel.dataReceived(
            HEAD + b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n" % token.encode()
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 403 "))

    def test_valid_token_body_relayed(self) -> None:
        channel, transport = self.connect()
        body = b'{"jsonrpc":"2.0"}'
        token = self.h.token()
        channel.dataReceived(
            HEAD
            + b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n"
            % (token.encode(), len(body))
            + body
        )
        self.h.flush()
        self.assertEqual(self.h.backend.last.body, body)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "), transport.value()[:80])
        # Verified once at header time; the guard reused it and cached the token.
        self.assertEqual(self.h.proxy.guard.cache_size, 1)

    def test_revoked_token_still_refused_by_the_guard(self) -> None:
        token = self.h.token(jti="jti-revoked")
        self.successResultOf(
            self.h.storage.revocations.revoke_jti("jti-revoked", self.h.clock.seconds() + 900)
        )
        channel, transport = self.connect()
        channel.dataReceived(
            HEAD + b"Authorization: Bearer %s\r\nContent-Length: 2\r\n\r\n{}" % token.encode()
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 401 "))
        self.assertEqual(self.h.backend.received, [])

    def test_auth_server_routes_read_their_bodies(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(
            b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ngrant=abc"
        )
        self.assertEqual(self.form.bodies, [b"grant=abc"])
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 200 "))
