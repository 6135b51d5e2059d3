"""The security wiring of the daemon, checked through ``build_application`` itself.

The harnesses (ProxyHarness, AuthServerHarness) build the parts their own way; these tests
send raw HTTP/1.1 to the Site that ``build_application`` returns, so a part that the
wiring forgets to connect (a limiter, the header-time bearer check, the connection caps,
the login cookie) fails here.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.application import Application, build_application
from authproxy.config import config_from_mapping
from authproxy.testing.upstream import s256_pair
from tests.test_fuzz_endpoints import TracebackCapture

REDIRECT_URI = "http://127.0.0.1:33418/callback"


class Exchange:
    """One connection to the application's Site from ``peer``."""

    def __init__(self, app: Application, peer: str = "203.0.113.7", port: int = 40000) -> None:
        kind = IPv6Address if ":" in peer else IPv4Address
        address = kind("TCP", peer, port)
        self.transport = StringTransport(
            peerAddress=address, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080)
        )
        self.protocol: Any = app.site.buildProtocol(address)
        self.protocol.makeConnection(self.transport)

    def send(self, raw: bytes) -> bytes:
        self.protocol.dataReceived(raw)
        return self.transport.value()

    def close(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def request(
    method: str,
    target: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1:8080"]
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse(response: bytes) -> tuple[int, dict[str, list[str]], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(": ")
        headers.setdefault(name.lower(), []).append(value)
    if headers.get("transfer-encoding") == ["chunked"]:
        body = dechunk(body)
    return int(status.split(" ")[1]), headers, body


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size, _, data = data.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            break
        out, data = out + data[:length], data[length + 2 :]
    return out


class WiredApplication:
    def __init__(self, case: SynchronousTestCase, **sections: dict[str, Any]) -> None:
        data: dict[str, Any] = {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9"},
            "upstream": {"type": "development"},
            "upstream_token": {"header_strategy": "none"},
        }
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        self.config = config_from_mapping(data, environ={})
        self.app = build_application(self.config, self.reactor)
        self.tracebacks = TracebackCapture(case)
        case.addCleanup(self.app.root.fallback.close)  # type: ignore[attr-defined]

    def call(
        self, raw: bytes, peer: str = "203.0.113.7"
    ) -> tuple[int, dict[str, list[str]], bytes]:
        exchange = Exchange(self.app, peer)
        response = exchange.send(raw)
        exchange.close()
        return parse(response)

    def register(self) -> dict[str, Any]:
        document = json.dumps({"redirect_uris": [REDIRECT_URI]}).encode()
        code, _, body = self.call(
            request("POST", "/oauth/register", {"Content-Type": "application/json"}, document)
        )
        assert code == 201, (code, body)
        result: dict[str, Any] = json.loads(body)
        return result


def authorize_target(client_id: str, challenge: str) -> str:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT_URI,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "client-state",
    }
    return "/oauth/authorize?" + urlencode(query)


class LoginCookieTests(SynchronousTestCase):
    """The login cookie (login_binding.py) as the wired authorize and callback use it."""

    def start_login(self, wired: WiredApplication) -> tuple[str, str]:
        """(internal state, the login cookie's name) of a login handed upstream."""
        client = wired.register()
        _, challenge = s256_pair()
        code, headers, _ = wired.call(
            request("GET", authorize_target(client["client_id"], challenge))
        )
        self.assertEqual(code, 302)
        state = parse_qs(urlsplit(headers["location"][0]).query)["state"][0]
        (cookie,) = [c for c in headers["set-cookie"] if c.startswith("authproxy-login-")]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=lax", cookie)
        return state, cookie.partition("=")[0]

    def test_cookie_set_on_hand_off_with_consent_skip(self) -> None:
        self.start_login(WiredApplication(self, auth_server={"consent": "skip"}))

    def test_non_ascii_login_cookie_is_refused_not_500(self) -> None:
        wired = WiredApplication(self, auth_server={"consent": "skip"})
        state, name = self.start_login(wired)
        raw = request("GET", "/oauth/callback?" + urlencode({"state": state, "code": "x"}))
        raw = raw.replace(b"\r\n\r\n", b"\r\nCookie: " + name.encode() + b"=\xc3\xa9\xff\r\n\r\n")
        code, _, body = wired.call(raw)
        self.assertEqual(code, 403, body[:300])
        self.assertEqual(wired.tracebacks.failures, [])


class DaemonBoundsTests(SynchronousTestCase):
    """The Site's bounds as ``build_application`` sets them."""

    def test_tokenless_post_to_the_proxy_is_answered_before_its_body(self) -> None:
        wired = WiredApplication(self)
        exchange = Exchange(wired.app)
        head = (
            b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
            b"Content-Length: 4194304\r\n\r\n"
        )
        code, headers, _ = parse(exchange.send(head))
        self.assertEqual(code, 401)
        self.assertTrue(headers["www-authenticate"][0].startswith("Bearer "))
        self.assertEqual(headers["connection"], ["close"])
        exchange.close()

    def test_large_bodies_to_the_authorization_server_refused_before_reading(self) -> None:
        # Its endpoints take small forms and JSON: a 4 MiB body, unauthenticated, must not
        # be buffered (40 of them once held 160 MB) before the endpoint refuses it.
        for path in ("/oauth/token", "/oauth/register", "/oauth/revoke", "/oauth/consent"):
            wired = WiredApplication(self)
            exchange = Exchange(wired.app)
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 4194304\r\n\r\n"
            ).encode()
            code, headers, body = parse(exchange.send(head))
            self.assertEqual(code, 413, path)
            self.assertIn(b"request_too_large", body, path)
            self.assertEqual(headers["connection"], ["close"], path)
            exchange.close()

    def test_form_just_over_the_endpoint_limit_gets_the_endpoints_error(self) -> None:
        # Between the endpoint's own limit and the header-time bound, the endpoint answers
        # as it always did (an OAuth error naming its limit).
        wired = WiredApplication(self)
        exchange = Exchange(wired.app)
        body = b"x" * (64 * 1024 + 1)
        raw = request(
            "POST",
            "/oauth/token",
            {"Content-Type": "application/x-www-form-urlencoded"},
            body,
        )
        code, _, answer = parse(exchange.send(raw))
        self.assertEqual(code, 413)
        self.assertEqual(json.loads(answer)["error"], "invalid_request")
        exchange.close()

    def test_connections_beyond_the_per_source_cap_get_503(self) -> None:
        wired = WiredApplication(
            self, server={"max_connections": 64, "max_connections_per_source": 2}
        )
        held = [Exchange(wired.app, port=40000 + i) for i in range(2)]
        third = Exchange(wired.app, port=40100)
        code, headers, _ = parse(third.transport.value())
        self.assertEqual(code, 503)
        self.assertIn("retry-after", headers)
        other = Exchange(wired.app, peer="198.51.100.9")
        self.assertEqual(other.transport.value(), b"", "another source is still served")
        for exchange in [*held, third, other]:
            exchange.close()

    def capped(self, trusted: str) -> WiredApplication:
        server = {"max_connections": 64, "max_connections_per_source": 2}
        return WiredApplication(self, server={**server, "trusted_proxies": [trusted]})

    def answers(self, wired: WiredApplication, peer: str, count: int) -> list[bytes]:
        """What each of ``count`` connections from ``peer`` was told on opening."""
        opened = [Exchange(wired.app, peer=peer, port=40000 + i) for i in range(count)]
        for exchange in opened:
            self.addCleanup(exchange.close)
        return [exchange.transport.value()[:12] for exchange in opened]

    def test_trusted_ipv4_proxy_is_exempt_from_the_per_source_cap(self) -> None:
        wired = self.capped("10.0.0.0/8")
        self.assertEqual(self.answers(wired, "10.0.0.5", 3), [b""] * 3)

    def test_trusted_ipv6_proxy_is_exempt_from_the_per_source_cap(self) -> None:
        # README, "Connection limits": peers in server.trusted_proxies are exempt (behind a
        # load balancer all traffic comes from a few addresses). An IPv6 source is counted
        # by its /64, and that network's name must not be what is looked up as trusted.
        wired = self.capped("2001:db8::5/128")
        self.assertEqual(self.answers(wired, "2001:db8::5", 3), [b""] * 3)
        # an untrusted neighbour in the same /64 is still capped
        self.assertEqual(self.answers(wired, "2001:db8::6", 3), [b"", b"", b"HTTP/1.1 503"])

    def test_head_not_complete_in_time_gets_408(self) -> None:
        wired = WiredApplication(self, server={"header_timeout": "2s"})
        exchange = Exchange(wired.app)
        exchange.send(b"GET /health HTTP/1.1\r\n")
        wired.reactor.advance(1)
        exchange.send(b"X-A: b\r\n")
        wired.reactor.advance(1.5)
        code, _, _ = parse(exchange.transport.value())
        self.assertEqual(code, 408)
        exchange.close()


class TokenEndpointLimitTests(SynchronousTestCase):
    """token_source_rate and token_rate, shared by /oauth/token and /oauth/revoke."""

    def test_token_and_revoke_share_the_per_source_limit(self) -> None:
        wired = WiredApplication(self, auth_server={"token_source_rate": "2/min"})
        client = wired.register()
        form = urlencode({"client_id": client["client_id"], "token": "x"}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        codes = [
            wired.call(request("POST", path, headers, form))[0]
            for path in ("/oauth/revoke", "/oauth/token", "/oauth/revoke")
        ]
        self.assertEqual(codes[:2], [200, 400])
        self.assertEqual(codes[2], 429)
        # another source is not limited
        self.assertEqual(
            wired.call(request("POST", "/oauth/revoke", headers, form), peer="198.51.100.9")[0],
            200,
        )

    def test_per_client_limit(self) -> None:
        wired = WiredApplication(self, auth_server={"token_rate": "1/min"})
        client = wired.register()
        form = urlencode({"client_id": client["client_id"], "token": "x"}).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        self.assertEqual(wired.call(request("POST", "/oauth/revoke", headers, form))[0], 200)
        code, _, body = wired.call(
            request("POST", "/oauth/token", headers, form), peer="198.51.100.9"
        )
        self.assertEqual(code, 429, body)


class DualStackTrustTests(SynchronousTestCase):
    """On a dual-stack listener an IPv4 peer arrives as ``::ffff:a.b.c.d``: a trusted IPv4
    proxy is the same proxy there."""

    def test_rate_limits_count_the_client_behind_a_mapped_trusted_proxy(self) -> None:
        wired = WiredApplication(
            self,
            server={"trusted_proxies": ["10.0.0.0/8"]},
            auth_server={"token_source_rate": "1/min"},
        )
        client = wired.register()
        form = urlencode({"client_id": client["client_id"], "token": "x"}).encode()
        codes = [
            wired.call(
                request(
                    "POST",
                    "/oauth/revoke",
                    {
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Forwarded-For": forwarded_for,
                    },
                    form,
                ),
                peer="::ffff:10.0.0.5",
            )[0]
            for forwarded_for in ("198.51.100.1", "198.51.100.2")
        ]
        self.assertEqual(codes, [200, 200], "two clients behind the proxy, one request each")
