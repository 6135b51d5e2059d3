"""Scope rules against bodies a backend reads differently from authproxy (the security
review's findings 3, 4 and 8; README "Security", "Scope rules").

Each table row is an attack that passed ``ScopeRules.check`` before the fix while a backend
executed the guarded operation: Go's encoding/json matches keys case-insensitively (and
folds ``ſ`` to ``s``, ``K`` to ``k``) and keeps the last duplicate, other parsers keep the
first, and the MCP SDKs' URL types (WHATWG parsers: pydantic's AnyUrl, JavaScript's URL)
normalise a resource URI before looking it up.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import Url
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from authproxy.config import ConfigError, ScopeRule
from authproxy.proxy.guard import BearerError, Principal
from authproxy.proxy.resource_uri import uri_problem
from authproxy.proxy.scope_rules import INVALID_REQUEST, JSONRPCRefusal, ScopeRules
from authproxy.testing.backend import ProxyHarness, proxy_config

MCP = "https://mcp.example.com/mcp"
RULES = [
    ScopeRule(method="tools/call", name="delete_*", scopes=("mcp:admin",)),
    ScopeRule(method="resources/read", name="file:///private/*", scopes=("mcp:admin",)),
]
USER = Principal("alice", "c1", frozenset({"openid"}), "j", 9e9, None, {})

# A body that smuggles delete_all past the rule, and what gave it away.
SMUGGLED: list[tuple[bytes, str]] = [
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"echo","Name":"delete_all"}}',
        'params has the key "Name"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call",'
        b'"params":{"name":"delete_all"}}',
        'the message has the key "Method"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},'
        b'"param\\u017f":{"name":"delete_all"}}',
        'the message has the key "param\u017f"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"\\u212aind":"x","name":"echo","NAME":"delete_all"}}',
        'params has the key "NAME"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"na\\u0000me":"delete_all"}}',
        'params has the key "na\\u0000me"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call",'
        b'"params":{"name":"delete_all","name":"echo"}}',
        'params has the key "name" twice',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"tools/list",'
        b'"params":{"name":"delete_all"}}',
        'the message has the key "method" twice',
    ),
    # A response carries no method for authproxy, but a case-insensitive backend reads one.
    (
        b'{"jsonrpc":"2.0","id":1,"result":{},"METHOD":"tools/call",'
        b'"params":{"name":"delete_all"}}',
        'the message has the key "METHOD"',
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_all"]}',
        "params of tools/call must be an object",
    ),
    (
        b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_all"]}}',
        "params.name of tools/call must be a string",
    ),
    (
        b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},'
        b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","nAme":"delete_all"}}]',
        'params has the key "nAme"',
    ),
]

# Resource URIs a WHATWG parser turns into file:///private/secret (or another name a rule
# would match), and why authproxy refuses them.
NON_CANONICAL_URIS: list[tuple[str, str]] = [
    ("FILE:///private/secret", "scheme"),
    ("file:///public/../private/secret", "segment"),
    ("file:///public/./../private/secret", "segment"),
    ("file:///public/%2e%2E/private/secret", "segment"),
    ("file:///public/.%2e/private/secret", "segment"),
    ("file:///private/%73ecret", "percent-encoded"),
    ("file:///public%2F..%2Fprivate/secret", "percent-encoded"),
    ("file:///public\\..\\private\\secret", "character"),
    ("fi\tle:///private/secret", "character"),
    (" file:///private/secret", "character"),
    ("file:///pri\nvate/secret", "character"),
    ("file://localhost/private/secret", "localhost"),
    ("file:////private/secret", "//"),
    ("file://server//private/secret", "//"),
    ("file:/private/secret", "//"),
    ("file:private/secret", "//"),
    ("https://EXAMPLE.com/private", "host"),
    ("https://\uff45xample.com/private", "character"),
    ("https://example.com:443/private", "port"),
    ("https://example.com:/private", "port"),
    ("https://example.com:0443/private", "port"),
    ("https:///example.com/private", "host"),
    ("https://example.com", "path"),
    ("https://127.1/private", "host"),
    ("https://0x7f000001/private", "host"),
    ("https://[0:0::1]/private", "host"),
    ("mcp://Docs/private", "host"),
    ("custom:a/../private", "segment"),
    ("private/secret", "scheme"),
    ("https://user@example.com/private", "userinfo"),
]

# Refused though a WHATWG parser keeps them: other normalisers rewrite them (RFC 3986's
# decode unreserved characters and lower-case hosts, path cleaners read %2F as "/"), a
# relative reference is no resource URI, and userinfo is dropped by lookups on host and path.
OTHER_NORMALISERS = {
    "file:///private/%73ecret",
    "file:///public%2F..%2Fprivate/secret",
    "mcp://Docs/private",
    "custom:a/../private",
    "private/secret",
    "https://user@example.com/private",
}

CANONICAL_URIS = [
    "file:///private/secret",
    "file:///public/readme.md",
    "file:///C:/x/y.txt",
    "https://example.com/a//b",
    "file://server/share/x",
    "https://example.com/private",
    "https://example.com:8443/x?q=1&r=..#frag",
    "https://127.0.0.1/private",
    "https://[::1]/x",
    "http://example.com/a%20b",
    "mcp://docs/guide",
    "ui://widget/weather.html",
    "urn:example:Doc",
    "custom:thing",
    "postgres://db.internal/public/tables",
    "file:///private/caf%C3%A9",
]


# Pieces of URIs where parsers disagree, for the property below.
URI_PIECES = st.sampled_from(
    ["//", "/", "a", "B", "..", ".", "%2e", "%2F", "%41", "%20", "?", "#", "@", ":", "443"]
    + ["0", "localhost", "127", "0x1", "[::1]", "[", "]", "'", "~", "%", "\\", "\t", "\u00e9"]
)
URI_SCHEMES = st.sampled_from(["file:", "https:", "http:", "ws:", "ftp:", "mcp:", "File:"])


def check(body: bytes, **headers: str) -> None:
    rules = ScopeRules(RULES)
    rules.check(Headers({k: [v] for k, v in headers.items()}), body, USER)


class SmuggledOperationTests(SynchronousTestCase):
    def test_parser_differentials_are_refused(self) -> None:
        for body, reason in SMUGGLED:
            with self.subTest(body=body):
                with self.assertRaises(JSONRPCRefusal) as caught:
                    check(body)
                self.assertEqual(caught.exception.code, INVALID_REQUEST)
                self.assertEqual(caught.exception.code, -32600)
                self.assertIn(reason, caught.exception.description)

    def test_exact_keys_and_other_members_pass(self) -> None:
        # Keys that fold to nothing guarded, and guarded names deeper than params, are the
        # backend's business; the guarded operation itself still needs its scope.
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {
                "name": "echo",
                "arguments": {"Name": "x", "name": "y", "URI": "z"},
                "_meta": {"progressToken": 1},
                "Nombre": "x",
            },
        }
        check(json.dumps(body).encode())
        with self.assertRaises(BearerError):
            check(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_x"}}')

    def test_refusal_keeps_the_id_when_only_params_is_doubtful(self) -> None:
        with self.assertRaises(JSONRPCRefusal) as caught:
            check(SMUGGLED[0][0])
        self.assertEqual(caught.exception.request_id, 1)
        # The message's own keys are doubtful, so its id is too: JSON-RPC's null.
        with self.assertRaises(JSONRPCRefusal) as caught:
            check(SMUGGLED[1][0])
        self.assertIsNone(caught.exception.request_id)


class ResourceURITests(SynchronousTestCase):
    def test_non_canonical_uris_are_refused(self) -> None:
        for uri, reason in NON_CANONICAL_URIS:
            with self.subTest(uri=uri):
                problem = uri_problem(uri)
                self.assertIsNotNone(problem)
                self.assertIn(reason, str(problem))
                body = {"jsonrpc": "2.0", "id": 1, "method": "resources/read"}
                body["params"] = {"uri": uri}
                with self.assertRaises(JSONRPCRefusal) as caught:
                    check(json.dumps(body).encode())
                self.assertEqual(caught.exception.code, INVALID_REQUEST)
                self.assertIn("params.uri", caught.exception.description)

    def test_canonical_uris_pass_and_whatwg_leaves_them_alone(self) -> None:
        for uri in CANONICAL_URIS:
            with self.subTest(uri=uri):
                self.assertIsNone(uri_problem(uri))
                # What the backend's URL type makes of it (pydantic's AnyUrl: a WHATWG
                # parser): the same string, so the rule matched what the backend reads.
                self.assertEqual(str(Url(uri)), uri)

    @settings(max_examples=3000, derandomize=True, deadline=None)
    @given(scheme=URI_SCHEMES, pieces=st.lists(URI_PIECES, max_size=8))
    def test_what_passes_is_what_whatwg_reads(self, scheme: str, pieces: list[str]) -> None:
        uri = scheme + "".join(pieces)
        if uri_problem(uri) is None:
            try:
                parsed = str(Url(uri))
            except ValueError:  # no URL at all: the backend refuses it too
                return
            self.assertEqual(parsed, uri)

    def test_every_refused_attack_is_one_whatwg_rewrites(self) -> None:
        # The table is of real differentials, not merely unusual spellings.
        for uri, _ in NON_CANONICAL_URIS:
            if uri in OTHER_NORMALISERS:
                continue
            with self.subTest(uri=uri):
                self.assertNotEqual(str(Url(uri)), uri)

    def test_only_uri_methods_are_checked(self) -> None:
        # A tool name is not a URI: "../x" is an ordinary (if odd) tool name.
        check(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a/../B"}}')
        with self.assertRaises(JSONRPCRefusal):
            check(
                b'{"jsonrpc":"2.0","id":1,"method":"resources/subscribe",'
                b'"params":{"uri":"FILE:///private/x"}}'
            )


class ProxyPathTests(SynchronousTestCase):
    """Through the proxy: the refusal is a JSON-RPC 400 and nothing reaches the backend."""

    def setUp(self) -> None:
        rules: list[dict[str, Any]] = [{"method": "tools/call", "name": "delete_*"}]
        rules[0]["scopes"] = ["mcp:admin"]
        self.h = ProxyHarness(proxy_config(proxy={"scope_rules": rules}))
        self.headers = self.h.auth(self.h.token(scope="openid", scp=None))

    def answer(self, d: Any) -> tuple[int, Any]:
        self.h.flush()
        response = self.successResultOf(d)
        content = self.successResultOf(response.content())
        return response.code, json.loads(content) if content else None

    def test_smuggled_name_is_a_jsonrpc_400(self) -> None:
        d = self.h.client.post(MCP, data=SMUGGLED[0][0], headers=self.headers)
        code, body = self.answer(d)
        self.assertEqual(code, 400)
        self.assertEqual(body["error"]["code"], -32600)
        self.assertEqual(body["id"], 1)
        self.assertEqual(self.h.backend.received, [])

    def test_body_on_get_or_delete_is_refused(self) -> None:
        smuggled = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_all"}}'
        for method in ("GET", "DELETE"):
            with self.subTest(method=method):
                d = self.h.client.request(method, MCP, data=smuggled, headers=self.headers)
                code, body = self.answer(d)
                self.assertEqual(code, 400)
                self.assertEqual(body["error"], "invalid_request")
                self.assertIn(f"a {method} request must not have a body", body["error_description"])
        self.assertEqual(self.h.backend.received, [])
        # Without a body both pass as before.
        for method in ("GET", "DELETE"):
            d = self.h.client.request(method, MCP, headers=self.headers)
            code, _ = self.answer(d)
            self.assertIn(code, (200, 204))
        self.assertEqual(len(self.h.backend.received), 2)


class ConsentSkipTests(SynchronousTestCase):
    def test_scope_rules_need_a_consent_step(self) -> None:
        rules = [{"method": "tools/call", "name": "delete_*", "scopes": ["mcp:admin"]}]
        with self.assertRaises(ConfigError) as caught:
            proxy_config(proxy={"scope_rules": rules}, auth_server={"consent": "skip"})
        self.assertEqual(
            caught.exception.problems,
            [
                'proxy.scope_rules: need auth_server.consent "remember" or "always": with '
                '"skip" any client gets a step-up scope by asking for it'
            ],
        )
        # Either on its own is fine.
        proxy_config(auth_server={"consent": "skip"})
        proxy_config(proxy={"scope_rules": rules}, auth_server={"consent": "always"})
