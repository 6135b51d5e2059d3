"""What the root table answers before any route: unknown well-known names, foreign hosts."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from tests.test_application_wiring import WiredApplication, request


def with_host(raw: bytes, host: str) -> bytes:
    return raw.replace(b"Host: 127.0.0.1:8080", b"Host: " + host.encode("latin-1"))


class WellKnownTests(SynchronousTestCase):
    def test_unknown_well_known_names_are_404_not_the_guards_401(self) -> None:
        wired = WiredApplication(self)
        for path in ("/.well-known/security.txt", "/.well-known/oauth-protected-resource/x/y"):
            code, headers, body = wired.call(request("GET", path))
            self.assertEqual(code, 404, path)
            self.assertNotIn("www-authenticate", headers)
            self.assertEqual(json.loads(body)["error"], "not_found")

    def test_known_well_known_names_still_served(self) -> None:
        wired = WiredApplication(self)
        for path in (
            "/.well-known/oauth-protected-resource/mcp",
            "/.well-known/oauth-authorization-server",
            "/.well-known/jwks.json",
        ):
            code, _, _ = wired.call(request("GET", path))
            self.assertEqual(code, 200, path)


class HostTests(SynchronousTestCase):
    """DNS rebinding defence: only public_url's host (and server.allowed_hosts) is served."""

    def test_foreign_host_is_misdirected(self) -> None:
        wired = WiredApplication(self)
        for path in ("/mcp", "/.well-known/oauth-authorization-server", "/oauth/register"):
            code, headers, body = wired.call(with_host(request("GET", path), "evil.example:8080"))
            self.assertEqual(code, 421, path)
            self.assertNotIn("www-authenticate", headers)
            error = json.loads(body)
            self.assertEqual(error["error"], "misdirected_request")
            self.assertIn("evil.example", error["error_description"])

    def test_foreign_host_with_a_body_is_answered_before_it(self) -> None:
        wired = WiredApplication(self)
        raw = with_host(request("POST", "/mcp", body=b"{}"), "evil.example")
        code, _, _ = wired.call(raw)
        self.assertEqual(code, 421)

    def test_public_url_host_any_case_and_loopback_aliases_served(self) -> None:
        wired = WiredApplication(self)
        for host in ("127.0.0.1:8080", "127.0.0.1", "LOCALHOST:8080", "[::1]:8080"):
            code, _, _ = wired.call(
                with_host(request("GET", "/.well-known/oauth-authorization-server"), host)
            )
            self.assertEqual(code, 200, host)

    def test_allowed_hosts(self) -> None:
        wired = WiredApplication(
            self,
            server={"public_url": "https://mcp.example.com", "allowed_hosts": ["MCP.internal"]},
        )
        path = "/.well-known/oauth-authorization-server"
        for host, expected in (
            ("mcp.example.com", 200),
            ("mcp.example.com:443", 200),
            ("mcp.internal:8443", 200),
            ("127.0.0.1:8080", 421),  # loopback aliases only for a loopback public_url
            ("other.example.com", 421),
        ):
            code, _, _ = wired.call(with_host(request("GET", path), host))
            self.assertEqual(code, expected, host)

    def test_probes_exempt(self) -> None:
        wired = WiredApplication(self)
        for path in ("/health", "/ready"):
            code, _, _ = wired.call(with_host(request("GET", path), "10.1.2.3:8080"))
            self.assertIn(code, (200, 503), path)

    def test_missing_host_is_misdirected(self) -> None:
        wired = WiredApplication(self)
        raw = request("GET", "/.well-known/oauth-authorization-server").replace(
            b"HTTP/1.1\r\nHost: 127.0.0.1:8080", b"HTTP/1.0"
        )
        code, _, _ = wired.call(raw)
        self.assertEqual(code, 421)

    def test_any_host_when_configured(self) -> None:
        wired = WiredApplication(self, server={"allowed_hosts": ["*"]})
        code, _, _ = wired.call(
            with_host(request("GET", "/.well-known/oauth-authorization-server"), "a.example")
        )
        self.assertEqual(code, 200)


def raw_request(target: str, hosts: list[str], version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {target} {version}", *(f"Host: {h}" for h in hosts)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class HostFramingTests(SynchronousTestCase):
    """Review 2 F3 (hosts_probe.py): a Host check that a second header, a missing one, an
    absolute-form target or a bracket trick could pass."""

    path = "/.well-known/oauth-authorization-server"

    def wired(self, **server: object) -> WiredApplication:
        return WiredApplication(self, server={"public_url": "https://mcp.example.com", **server})

    def test_several_host_headers_are_400(self) -> None:
        wired = self.wired()
        for hosts in (
            ["mcp.example.com", "evil.example"],
            ["evil.example", "mcp.example.com"],
            ["mcp.example.com", "mcp.example.com"],
        ):
            code, _, body = wired.call(raw_request(self.path, hosts))
            self.assertEqual(code, 400, hosts)
            self.assertIn("Host", json.loads(body)["error_description"])

    def test_http11_without_host_is_400(self) -> None:
        code, _, body = self.wired().call(raw_request(self.path, []))
        self.assertEqual(code, 400)
        self.assertIn("Host", json.loads(body)["error_description"])

    def test_absolute_form_target_is_400(self) -> None:
        wired = self.wired()
        for target, host in (
            ("http://evil.example" + self.path, "mcp.example.com"),
            ("https://mcp.example.com" + self.path, "evil.example"),
            ("HTTPS://mcp.example.com" + self.path, "mcp.example.com"),
            ("http://evil.example/health", "mcp.example.com"),
        ):
            code, _, body = wired.call(raw_request(target, [host]))
            self.assertEqual(code, 400, target)
            self.assertIn("origin-form", json.loads(body)["error_description"])

    def test_only_a_bracketed_ipv6_literal_with_an_optional_port(self) -> None:
        wired = self.wired(allowed_hosts=["::1", "mcp.internal"])
        for host, expected in (
            ("[mcp.example.com]evil", 421),
            ("[mcp.example.com]", 421),
            ("[::1]evil", 421),
            ("[::1]:", 421),
            ("[::1]:8x", 421),
            ("mcp.example.com:evil", 421),
            ("mcp.internal:", 421),
            ("[::1]", 200),
            ("[::1]:8443", 200),
            ("mcp.internal:8443", 200),
        ):
            code, _, _ = wired.call(raw_request(self.path, [host]))
            self.assertEqual(code, expected, host)

    def test_any_host_still_needs_one_host_header(self) -> None:
        wired = self.wired(allowed_hosts=["*"])
        self.assertEqual(wired.call(raw_request(self.path, ["a.example", "b.example"]))[0], 400)
        self.assertEqual(wired.call(raw_request(self.path, ["a.example"]))[0], 200)
