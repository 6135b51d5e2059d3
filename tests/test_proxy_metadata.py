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

    def test_path_inserted_document(self) -> None:
        h = ProxyHarness()
        response = self.get(h, "/.well-known/oauth-protected-resource/mcp")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(
            body,
            {
                "resource": "https://mcp.example.com/mcp",
                "resource_name": "MCP server at mcp.example.com",
                "authorization_servers": ["https://mcp.example.com"],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["openid", "profile", "email"],
            },
        )
        self.assertEqual(h.backend.received, [])

    def test_root_document_is_not_the_mcp_resource(self) -> None:
        # RFC 9728 §3.3: the root document would have to name https://mcp.example.com, a
        # resource this proxy issues no tokens for: 404, pointing at the real document.
        h = ProxyHarness()
        response = self.get(h, "/.well-known/oauth-protected-resource")
        self.assertEqual(response.code, 404)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["error"], "not_found")
        self.assertIn(
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
            body["error_description"],
        )
        self.assertEqual(h.backend.received, [])

    def test_root_document_of_a_root_resource(self) -> None:
        h = ProxyHarness(proxy_config(backend={"path": "/"}))
        response = self.get(h, "/.well-known/oauth-protected-resource")
        self.assertEqual(response.code, 200)
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["resource"], "https://mcp.example.com/")

    def test_resource_name_and_scope_rules(self) -> None:
        rules = [
            {"method": "tools/call", "name": "delete_*", "scopes": ["mcp:admin"]},
            {"method": "tools/call", "name": "write_*", "scopes": ["mcp:write", "mcp:admin"]},
        ]
        h = ProxyHarness(proxy_config(proxy={"resource_name": "Acme files", "scope_rules": rules}))
        response = self.get(h, "/.well-known/oauth-protected-resource/mcp")
        body = json.loads(self.successResultOf(response.content()))
        self.assertEqual(body["resource_name"], "Acme files")
        self.assertEqual(
            body["scopes_supported"], ["openid", "profile", "email", "mcp:admin", "mcp:write"]
        )

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
