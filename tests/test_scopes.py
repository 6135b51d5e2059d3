"""Scopes the way MCP clients expect them: scope rules on the proxy path (headers and body,
contradictions, batches, the 403 step-up challenge), their configuration, what registration
and /oauth/authorize grant, and a step-up through the consent page."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import ConfigError
from authproxy.proxy.scope_rules import HEADER_MISMATCH, PARSE_ERROR
from authproxy.testing.backend import ProxyHarness, proxy_config
from authproxy.testing.upstream import AuthServerHarness, s256_pair

MCP = "https://mcp.example.com/mcp"
RULES = [
    {"method": "tools/call", "name": "delete_*", "scopes": ["mcp:admin"]},
    {"method": "resources/read", "name": "file:///secret/*", "scopes": ["mcp:secrets"]},
    {"method": "tools/list", "scopes": ["mcp:read"]},
]


def call(name: str, method: str = "tools/call", request_id: int = 1) -> dict[str, Any]:
    key = "uri" if method.startswith("resources/") else "name"
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {key: name}}


class ScopeRuleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ProxyHarness(proxy_config(proxy={"scope_rules": RULES}))

    def post(
        self, body: object, scope: str = "openid profile mcp:read", **headers: str
    ) -> tuple[Any, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        token = self.h.token(scope=scope, scp=None)
        d = self.h.client.post(MCP, data=data, headers={**self.h.auth(token), **headers})
        self.h.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response, json.loads(content) if content else None

    def assertStepUp(self, response: Any, body: Any, scope: str) -> None:
        self.assertEqual(response.code, 403)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('error="insufficient_scope"', challenge)
        self.assertIn(f'scope="{scope}"', challenge)
        self.assertIn(
            'resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"',
            challenge,
        )
        self.assertEqual(body["error"], "insufficient_scope")
        self.assertEqual(self.h.backend.received, [])

    def test_operation_needing_a_scope_the_token_lacks(self) -> None:
        response, body = self.post(call("delete_file"))
        # The needed scope, then what the token already has (clients that replace their
        # scope with the challenge's keep it).
        self.assertStepUp(response, body, "mcp:admin mcp:read openid profile")
        self.assertIn(
            "tools/call of 'delete_file' needs the scope mcp:admin", body["error_description"]
        )

    def test_operations_the_rules_do_not_name_pass(self) -> None:
        response, _ = self.post(call("read_file"))
        self.assertEqual(response.code, 200)
        response, _ = self.post(call("delete_file"), scope="openid mcp:admin mcp:read")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.h.backend.received), 2)

    def test_rule_without_name_matches_the_method(self) -> None:
        response, body = self.post(
            {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, scope="openid"
        )
        self.assertStepUp(response, body, "mcp:read openid")

    def test_resource_uri_glob(self) -> None:
        response, body = self.post(call("file:///secret/key", "resources/read"))
        self.assertStepUp(response, body, "mcp:secrets mcp:read openid profile")
        response, _ = self.post(call("file:///public/readme", "resources/read"))
        self.assertEqual(response.code, 200)

    def test_headers_agreeing_with_the_body(self) -> None:
        headers = {"Mcp-Method": "tools/call", "Mcp-Name": "delete_file"}
        response, body = self.post(call("delete_file"), **headers)
        self.assertEqual(response.code, 403)
        encoded = "=?base64?" + base64.b64encode("delete_café".encode()).decode() + "?="
        response, _ = self.post(
            call("delete_café"),
            scope="mcp:admin",
            **{"Mcp-Method": "tools/call", "Mcp-Name": encoded},
        )
        self.assertEqual(response.code, 200)

    def assertMismatch(self, response: Any, body: Any, request_id: object = 1) -> None:
        self.assertEqual(response.code, 400)
        self.assertEqual(body["jsonrpc"], "2.0")
        self.assertEqual(body["id"], request_id)
        self.assertEqual(body["error"]["code"], HEADER_MISMATCH)
        self.assertEqual(self.h.backend.received, [])

    def test_a_header_cannot_make_an_operation_look_like_another(self) -> None:
        response, body = self.post(call("delete_file"), **{"Mcp-Method": "tools/list"})
        self.assertMismatch(response, body)
        self.assertIn("Mcp-Method header ('tools/list')", body["error"]["message"])
        response, body = self.post(call("delete_file"), **{"Mcp-Name": "read_file"})
        self.assertMismatch(response, body)
        self.assertIn("params.name", body["error"]["message"])
        response, body = self.post(call("delete_file"), **{"Mcp-Name": "=?base64?!!?="})
        self.assertMismatch(response, body)

    def test_batch_every_element_must_pass(self) -> None:
        batch = [call("read_file", request_id=1), call("delete_file", request_id=2)]
        response, body = self.post(batch)
        self.assertStepUp(response, body, "mcp:admin mcp:read openid profile")
        response, _ = self.post([call("read_file"), {"jsonrpc": "2.0", "id": 9, "result": {}}])
        self.assertEqual(response.code, 200)

    def test_body_that_is_not_json(self) -> None:
        response, body = self.post(b"\xff{not json")
        self.assertEqual(response.code, 400)
        self.assertEqual(body["error"]["code"], PARSE_ERROR)
        self.assertEqual(self.h.backend.received, [])

    def test_get_and_responses_are_not_operations(self) -> None:
        d = self.h.client.get(MCP, headers=self.h.auth(self.h.token(scope="openid", scp=None)))
        self.h.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        response, _ = self.post({"jsonrpc": "2.0", "id": 3, "result": {}}, scope="openid")
        self.assertEqual(response.code, 200)

    def test_401_names_the_initial_scopes_not_the_step_up_ones(self) -> None:
        d = self.h.client.post(MCP, data=b"{}")
        self.h.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 401)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('scope="openid profile email"', challenge)
        self.assertIn("resource_metadata=", challenge)


class NoRulesTests(SynchronousTestCase):
    def test_without_rules_no_body_is_read(self) -> None:
        h = ProxyHarness()
        self.assertIsNone(h.proxy._scope_rules)
        # Not JSON, and a header contradicting nothing: the proxy passes it untouched.
        d = h.client.post(MCP, data=b"\xffnot json", headers={**h.auth(), "Mcp-Method": "x"})
        h.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        self.assertEqual(len(h.backend.received), 1)


class ScopeRuleConfigTests(SynchronousTestCase):
    def problems(self, *rules: dict[str, Any], **proxy: Any) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            proxy_config(proxy={"scope_rules": list(rules), **proxy})
        return caught.exception.problems

    def test_bad_rules_are_one_line_each(self) -> None:
        bad = [
            {"method": "tools/*", "scopes": ["a"]},
            {"method": "tools/call", "name": "del[ete", "scopes": ["a"]},
            {"method": "tools/call", "name": "", "scopes": ["a"]},
            {"method": "tools/call", "scopes": []},
            {"method": "tools/call", "scopes": ['a"b']},
        ]
        # A file that does not structure is reported first, alone (cattrs' pass).
        problems = self.problems(*bad, {"method": "tools/call", "scopes": ["a"], "tool": "x"}, {})
        self.assertEqual(
            problems,
            [
                "proxy.scope_rules[5].tool: unknown key",
                "proxy.scope_rules[6].method: is required",
                "proxy.scope_rules[6].scopes: is required",
            ],
        )
        self.assertEqual(
            self.problems(*bad, resource_name="x\n"),
            [
                "proxy.resource_name: must be printable text of at most 200 characters",
                'proxy.scope_rules[0].method: "tools/*" is not an MCP method name (an exact '
                'name, e.g. "tools/call")',
                'proxy.scope_rules[1].name: "del[ete" has an unclosed "[" (write "[[]" for a '
                "literal bracket)",
                'proxy.scope_rules[2].name: "" is empty (use "*" for any name)',
                "proxy.scope_rules[3].scopes: needs at least one scope",
                'proxy.scope_rules[4].scopes[0]: "a"b" is not a scope (RFC 6749 §3.3)',
            ],
        )

    def test_rule_scopes_become_supported(self) -> None:
        config = proxy_config(proxy={"scope_rules": RULES[:1]})
        self.assertEqual(
            config.auth_server.scopes_supported,
            ("openid", "profile", "email", "offline_access", "mcp:admin"),
        )


STEP_UP = {
    "proxy": {"scope_rules": RULES[:1]},
    "auth_server": {"consent": "remember"},
}


class StepUpAuthorizationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness(STEP_UP)
        # As the MCP SDKs register: with the 401 challenge's scopes (and offline_access).
        self.client = self.h.register(scope="openid profile email offline_access")

    def consent_page(self, scope: str) -> tuple[str, bytes]:
        verifier, challenge = s256_pair()
        page = self.h.get(self.h.authorize_url(self.client, challenge, scope=scope))
        self.assertEqual(page.code, 200, page.body)
        return verifier, page.body

    def approve(self, page: bytes, verifier: str) -> dict[str, Any]:
        fields = dict(re.findall(rb'name="(state|csrf_token)" value="([^"]+)"', page))
        approved = self.h.post_form(
            "/oauth/consent",
            {k.decode(): v.decode() for k, v in fields.items()} | {"decision": "approve"},
        )
        self.assertEqual(approved.code, 302, approved.body)
        result = self.h.follow_login(approved.header("location") or "")
        code = result.location_params()["code"]
        tokens: dict[str, Any] = self.h.redeem(self.client, code, verifier).json()
        return tokens

    def test_registration_without_step_up_scopes(self) -> None:
        self.assertEqual(self.client["scope"], "openid profile email offline_access")
        bare = self.h.register()
        self.assertEqual(bare["scope"], "openid profile email offline_access")

    def test_step_up_shows_the_new_scope_and_the_token_carries_it(self) -> None:
        verifier, page = self.consent_page("openid profile")
        self.assertNotIn(b"mcp:admin", page)
        first = self.approve(page, verifier)
        self.assertEqual(first["scope"], "openid profile")
        # Remembered now, for exactly that set: the same request goes straight to the IdP.
        _, challenge = s256_pair()
        again = self.h.get(self.h.authorize_url(self.client, challenge, scope="openid profile"))
        self.assertEqual(again.code, 302)
        # Step-up: more than was remembered, so the page again, naming the new scope.
        verifier, page = self.consent_page("openid profile mcp:admin")
        self.assertIn(b"<code>mcp:admin</code>", page)
        stepped = self.approve(page, verifier)
        self.assertEqual(stepped["scope"], "openid profile mcp:admin")

    def test_scopes_outside_the_registration_are_invalid_scope(self) -> None:
        narrow = self.h.register(scope="openid")
        _, challenge = s256_pair()
        result = self.h.get(self.h.authorize_url(narrow, challenge, scope="openid email"))
        self.assertEqual(result.code, 302)
        params = result.location_params()
        self.assertEqual(params["error"], "invalid_scope")
        self.assertIn("email", params["error_description"])
        # ...but a step-up scope may be asked for beyond it.
        page = self.h.get(self.h.authorize_url(narrow, challenge, scope="openid mcp:admin"))
        self.assertEqual(page.code, 200)
        # No scope parameter: the registered scopes, never the step-up ones.
        page = self.h.get(self.h.authorize_url(narrow, challenge))
        self.assertEqual(page.code, 200)
        self.assertNotIn(b"mcp:admin", page.body)
