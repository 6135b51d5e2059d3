"""RFC 9728 protected resource metadata."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.backend import ProxyHarness, proxy_config


class MetadataTests(SynchronousTestCase):
    def get(self, h: ProxyHarness, path: str, method: str = "GET", **kw: object):  # type: ignore[no-untyped-def]
        d = h.client.request(method, "https://mcp.example.com" + path, **kw)
        h.flush()
        return self.successResultOf(d)

    def test_both_paths(self) -> None:
        h = ProxyHarness()
        for path in (
            "/.well-known/oauth-protected-resource",
            "/.well-known/oauth-protected-resource/mcp",
        ):
            response = self.get(h, path)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
            body = json.loads(self.successResultOf(response.content()))
            self.assertEqual(
                body,
                {
                    "resource": "https://mcp.example.com/mcp",
                    "authorization_servers": ["https://mcp.example.com"],
                    "bearer_methods_supported": ["header"],
                    "scopes_supported": ["openid", "profile", "email"],
                },
            )
        self.assertEqual(h.backend.received, [])

    def test_sse_transport_resource(self) -> None:
        h = ProxyHarness(proxy_config(backend={"transport": "sse"}))
        response = self.get(h, "/.well-known/oauth-protected-resource/sse")
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["resource"], "https://mcp.example.com/sse")

    def test_preflight(self) -> None:
        h = ProxyHarness()
        response = self.get(
            h,
            "/.well-known/oauth-protected-resource/mcp",
            method="OPTIONS",
            headers={
                "Origin": "http://localhost:6274",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "mcp-protocol-version",
            },
        )
        self.assertEqual(response.code, 204)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual(
            response.headers.getRawHeaders("access-control-allow-headers"), ["mcp-protocol-version"]
        )
