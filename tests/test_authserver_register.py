"""Dynamic client registration (RFC 7591): validation, rate limit, caps and expiry."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.limits import (
    MAX_CLIENT_NAME,
    MAX_CONTACT_LENGTH,
    MAX_CONTACTS,
    MAX_METADATA_STRING,
    MAX_METADATA_URI_LENGTH,
    MAX_REDIRECT_URI_LENGTH,
)
from authproxy.authserver.ratelimit import TokenBucketLimiter
from authproxy.authserver.register import check_redirect_uri, validate_client_metadata
from authproxy.authserver.scopes import ClientScopes
from authproxy.http.errors import OAuthError
from authproxy.storage.memory.rates import MemoryRateCounters
from authproxy.testing.backend import proxy_config
from authproxy.testing.upstream import AuthServerHarness, s256_pair

SUPPORTED = ("openid", "profile", "email", "offline_access")
STEP_UP_CONFIG = proxy_config(
    proxy={"scope_rules": [{"method": "tools/call", "name": "delete_*", "scopes": ["mcp:admin"]}]}
)
GOOD_URI = "http://127.0.0.1:33418/callback"

# (redirect URI, acceptable)
REDIRECT_URI_TABLE: list[tuple[object, bool]] = [
    ("https://app.example.com/callback", True),
    ("https://app.example.com/cb?x=1", True),
    ("http://127.0.0.1/callback", True),
    ("http://127.0.0.1:8765/callback", True),
    ("http://127.5.6.7:1/cb", True),
    ("http://localhost:3000/callback", True),
    ("http://LOCALHOST:3000/callback", True),
    ("http://[::1]:3000/callback", True),
    ("cursor://anysphere.cursor-retrieval/oauth/user-x/callback", True),
    ("vscode://vscode.github-authentication/did-authenticate", True),
    ("com.example.app:/oauth2redirect", True),
    ("http://app.example.com/callback", False),
    ("http://192.168.1.10/callback", False),
    ("http://localhost.evil.com/callback", False),
    # browsers read these hosts differently from urllib (tests/test_redirect_uri.py)
    ("http://evil.example\\@127.0.0.1/cb", False),
    ("http://127.1/cb", False),
    ("http://0x7f000001/cb", False),
    ("http://127.0.0.1\t/cb", False),
    ("http://127.0.0.1:5@evil.example/cb", False),
    ("https://app.example.com/callback#frag", False),
    ("https://app.example.com/callback#", False),
    ("javascript:alert(1)", False),
    ("JavaScript:alert(1)", False),
    ("data:text/html,hi", False),
    ("file:///etc/passwd", False),
    ("https:///nohost", False),
    ("/relative/callback", False),
    ("callback", False),
    ("https://app.example.com/" + "a" * MAX_REDIRECT_URI_LENGTH, False),
    ("https://app.example.com/ space", False),
    ("http://127.0.0.1:99999/cb", False),
    ("", False),
    (42, False),
    (None, False),
]


class RedirectURIValidationTests(SynchronousTestCase):
    def test_table(self) -> None:
        for uri, ok in REDIRECT_URI_TABLE:
            why = check_redirect_uri(uri)
            self.assertEqual(why is None, ok, f"{uri!r}: {why}")


def refused(test: SynchronousTestCase, document: object) -> OAuthError:
    return test.assertRaises(OAuthError, validate_client_metadata, document, SUPPORTED)


class ClientMetadataValidationTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        md = validate_client_metadata({"redirect_uris": [GOOD_URI]}, SUPPORTED)
        self.assertEqual(md.redirect_uris, (GOOD_URI,))
        self.assertEqual(md.grant_types, ("authorization_code", "refresh_token"))
        self.assertEqual(md.response_types, ("code",))
        self.assertEqual(md.token_endpoint_auth_method, "none")
        self.assertEqual(md.scopes, SUPPORTED)
        self.assertIsNone(md.client_name)

    def test_accepted_variants(self) -> None:
        md = validate_client_metadata(
            {
                "redirect_uris": [GOOD_URI, GOOD_URI, "https://a.example/cb"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
                "client_name": "Claude Code",
                "scope": "openid email openid",
                "client_uri": "https://claude.ai",
                "contacts": ["a@b.c"],
                "unknown_field": {"ignored": True},
            },
            SUPPORTED,
        )
        self.assertEqual(md.redirect_uris, (GOOD_URI, "https://a.example/cb"))
        self.assertEqual(md.grant_types, ("authorization_code",))
        self.assertEqual(md.scopes, ("openid", "email"))
        self.assertEqual(md.client_name, "Claude Code")
        self.assertEqual(md.extra, {"client_uri": "https://claude.ai", "contacts": ["a@b.c"]})

    def test_unsupported_scopes_are_dropped(self) -> None:
        # RFC 7591 §3.2.1: the server may register less than asked; the response says what.
        md = validate_client_metadata(
            {"redirect_uris": [GOOD_URI], "scope": "openid admin"}, SUPPORTED
        )
        self.assertEqual(md.scopes, ("openid",))
        # Nothing usable asked for: the default set, as when no scope was named.
        md = validate_client_metadata({"redirect_uris": [GOOD_URI], "scope": "root"}, SUPPORTED)
        self.assertEqual(md.scopes, SUPPORTED)

    def test_step_up_scopes_are_not_granted_by_default(self) -> None:
        # ToolHive #3745: a client that names no scope must not get every scope.
        scopes = ClientScopes.from_config(STEP_UP_CONFIG)
        md = validate_client_metadata({"redirect_uris": [GOOD_URI]}, scopes)
        self.assertEqual(md.scopes, SUPPORTED)
        self.assertNotIn("mcp:admin", md.scopes)
        md = validate_client_metadata(
            {"redirect_uris": [GOOD_URI], "scope": "openid mcp:admin"}, scopes
        )
        self.assertEqual(md.scopes, ("openid", "mcp:admin"))

    def test_table(self) -> None:
        base: dict[str, Any] = {"redirect_uris": [GOOD_URI]}
        cases: list[tuple[object, str]] = [
            ([], "invalid_client_metadata"),
            ("text", "invalid_client_metadata"),
            ({}, "invalid_redirect_uri"),
            ({"redirect_uris": []}, "invalid_redirect_uri"),
            ({"redirect_uris": GOOD_URI}, "invalid_redirect_uri"),
            ({"redirect_uris": [GOOD_URI] * 11}, "invalid_redirect_uri"),
            ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
            ({"redirect_uris": [GOOD_URI, "javascript:x"]}, "invalid_redirect_uri"),
            ({"redirect_uris": [GOOD_URI + "#f"]}, "invalid_redirect_uri"),
            (
                {**base, "token_endpoint_auth_method": "client_secret_basic"},
                "invalid_client_metadata",
            ),
            ({**base, "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
            ({**base, "grant_types": ["refresh_token"]}, "invalid_client_metadata"),
            (
                {**base, "grant_types": ["authorization_code", "implicit"]},
                "invalid_client_metadata",
            ),
            (
                {**base, "grant_types": ["authorization_code", "client_credentials"]},
                "invalid_client_metadata",
            ),
            ({**base, "grant_types": "authorization_code"}, "invalid_client_metadata"),
            ({**base, "response_types": ["token"]}, "invalid_client_metadata"),
            ({**base, "response_types": ["code", "token"]}, "invalid_client_metadata"),
            ({**base, "response_types": []}, "invalid_client_metadata"),
            ({**base, "client_name": "x" * 257}, "invalid_client_metadata"),
            ({**base, "client_name": 5}, "invalid_client_metadata"),
            ({**base, "scope": ["openid"]}, "invalid_client_metadata"),
            ({**base, "logo_uri": 7}, "invalid_client_metadata"),
            ({**base, "contacts": "a@b.c"}, "invalid_client_metadata"),
        ]
        for document, error in cases:
            e = refused(self, document)
            self.assertEqual((e.error, e.status), (error, 400), repr(document)[:120])
            self.assertTrue(e.description)

    def test_every_stored_string_is_capped(self) -> None:
        base: dict[str, Any] = {"redirect_uris": [GOOD_URI]}
        long_uri = "https://a.example/" + "a" * MAX_METADATA_URI_LENGTH
        cases: list[tuple[dict[str, Any], str, str]] = [
            (
                {"redirect_uris": ["https://a.example/" + "a" * MAX_REDIRECT_URI_LENGTH]},
                "invalid_redirect_uri",
                f"longer than {MAX_REDIRECT_URI_LENGTH}",
            ),
            (
                {**base, "client_name": "x" * (MAX_CLIENT_NAME + 1)},
                "invalid_client_metadata",
                "client_name",
            ),
            ({**base, "logo_uri": long_uri}, "invalid_client_metadata", "logo_uri"),
            ({**base, "client_uri": long_uri}, "invalid_client_metadata", "client_uri"),
            ({**base, "tos_uri": long_uri}, "invalid_client_metadata", "tos_uri"),
            ({**base, "policy_uri": long_uri}, "invalid_client_metadata", "policy_uri"),
            (
                {**base, "software_id": "x" * (MAX_METADATA_STRING + 1)},
                "invalid_client_metadata",
                "software_id",
            ),
            (
                {**base, "contacts": ["a@b.example"] * (MAX_CONTACTS + 1)},
                "invalid_client_metadata",
                f"at most {MAX_CONTACTS}",
            ),
            (
                {**base, "contacts": ["a" * MAX_CONTACT_LENGTH + "@b.example"]},
                "invalid_client_metadata",
                "contact",
            ),
        ]
        for document, error, says in cases:
            with self.subTest(document=repr(document)[:80]):
                e = refused(self, document)
                self.assertEqual(e.error, error)
                self.assertIn(says, e.description)

    def test_metadata_uris_must_be_https(self) -> None:
        for field in ("logo_uri", "client_uri", "tos_uri", "policy_uri"):
            for value in (
                "http://evil.example/logo.png",
                "javascript:alert(1)",
                "data:image/png;base64,AAAA",
                "https://evil.example\\@good.example/logo.png",
                "//evil.example/logo.png",
            ):
                with self.subTest(field=field, value=value):
                    e = refused(self, {"redirect_uris": [GOOD_URI], field: value})
                    self.assertEqual(e.error, "invalid_client_metadata")
                    self.assertIn(field, e.description)
        md = validate_client_metadata(
            {
                "redirect_uris": [GOOD_URI],
                "logo_uri": "https://app.example/l.png",
                "tos_uri": "https://app.example/tos#terms",
            },
            SUPPORTED,
        )
        self.assertEqual(md.extra["tos_uri"], "https://app.example/tos#terms")

    def test_non_string_list_members_are_a_400_not_a_500(self) -> None:
        base: dict[str, Any] = {"redirect_uris": [GOOD_URI]}
        for field in ("response_types", "grant_types", "redirect_uris", "contacts"):
            for member in ({}, [], 5, None, True):
                with self.subTest(field=field, member=member):
                    e = refused(self, {**base, field: [member]})
                    self.assertEqual(e.status, 400)
                    self.assertIn(field.rstrip("s"), e.description)

    def test_text_that_cannot_be_shown_is_refused(self) -> None:
        base: dict[str, Any] = {"redirect_uris": [GOOD_URI]}
        for field, value in (
            ("client_name", "\ud800"),
            ("client_name", "Good \udfff"),
            ("client_name", "Bank\u202egnp.exe"),  # right-to-left override spoofs the name
            ("client_name", "line\nbreak"),
            ("software_id", "\ud800"),
            ("software_version", "1\x00"),
            ("contacts", ["\ud800@example.com"]),
        ):
            with self.subTest(field=field, value=value):
                e = refused(self, {**base, field: value})
                self.assertEqual(e.error, "invalid_client_metadata")
                self.assertIn(field.rstrip("s"), e.description)
        md = validate_client_metadata({**base, "client_name": "Café 🚀 Ünïcode"}, SUPPORTED)
        self.assertEqual(md.client_name, "Café 🚀 Ünïcode")

    def test_boundaries_accepted(self) -> None:
        uris = [f"http://127.0.0.1/cb{i}" for i in range(10)]
        md = validate_client_metadata({"redirect_uris": uris, "client_name": "x" * 256}, SUPPORTED)
        self.assertEqual(len(md.redirect_uris), 10)
        long_uri = "https://a.example/" + "a" * (
            MAX_REDIRECT_URI_LENGTH - len("https://a.example/")
        )
        validate_client_metadata({"redirect_uris": [long_uri]}, SUPPORTED)


class RegistrationEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness({"auth_server": {"registration": {"rate": "100/min"}}})

    def test_created(self) -> None:
        result = self.h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI], "client_name": "Inspector", "scope": "openid"},
        )
        self.assertEqual(result.code, 201)
        self.assertEqual(result.header("cache-control"), "no-store")
        body = result.json()
        self.assertGreaterEqual(len(body["client_id"]), 32)
        self.assertEqual(body["client_id_issued_at"], int(self.h.clock.seconds()))
        self.assertEqual(body["redirect_uris"], [GOOD_URI])
        self.assertEqual(body["grant_types"], ["authorization_code", "refresh_token"])
        self.assertEqual(body["response_types"], ["code"])
        self.assertEqual(body["token_endpoint_auth_method"], "none")
        self.assertEqual(body["client_name"], "Inspector")
        self.assertEqual(body["scope"], "openid")
        self.assertNotIn("client_secret", body)
        stored = self.successResultOf(self.h.storage.clients.get_client(body["client_id"]))
        assert stored is not None
        self.assertEqual(stored.redirect_uris, (GOOD_URI,))
        self.assertIsNone(stored.last_used_at)

    def test_client_ids_are_random(self) -> None:
        ids = {self.h.register()["client_id"] for _ in range(5)}
        self.assertEqual(len(ids), 5)

    def test_invalid_metadata_answers_400(self) -> None:
        result = self.h.request(
            "POST", "/oauth/register", json_body={"redirect_uris": ["http://evil.example/cb"]}
        )
        self.assertEqual(result.code, 400)
        self.assertEqual(result.json()["error"], "invalid_redirect_uri")
        self.assertIn("error_description", result.json())
        result = self.h.request(
            "POST", "/oauth/register", json_body={"redirect_uris": [GOOD_URI], "scope": 7}
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_client_metadata"))

    def test_json_only(self) -> None:
        result = self.h.request(
            "POST",
            "/oauth/register",
            data={"redirect_uris": GOOD_URI},
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_client_metadata"))
        result = self.h.request(
            "POST",
            "/oauth/register",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_client_metadata"))

    def test_body_limit(self) -> None:
        padding = "x" * (64 * 1024)
        result = self.h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI], "software_id": padding},
        )
        self.assertEqual(result.code, 413)

    def test_get_not_allowed(self) -> None:
        self.assertEqual(self.h.get("/oauth/register").code, 405)

    def test_cors_preflight(self) -> None:
        result = self.h.request("OPTIONS", "/oauth/register")
        self.assertEqual(result.code, 204)
        self.assertEqual(result.header("access-control-allow-origin"), "*")
        self.assertIn("content-type", (result.header("access-control-allow-headers") or "").lower())


class RateLimitTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness(
            {
                "auth_server": {"registration": {"rate": "3/min"}},
                "server": {"trusted_proxies": ["127.0.0.1/32"]},
            }
        )

    def register_from(self, address: str) -> Any:
        return self.h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI]},
            headers={"X-Forwarded-For": address},
        )

    def test_per_address_bucket(self) -> None:
        for _ in range(3):
            self.assertEqual(self.register_from("192.0.2.1").code, 201)
        limited = self.register_from("192.0.2.1")
        self.assertEqual(limited.code, 429)
        self.assertEqual(limited.header("retry-after"), "20")
        self.assertEqual(limited.json()["error"], "too_many_requests")
        # another address has its own bucket
        self.assertEqual(self.register_from("192.0.2.2").code, 201)
        # one token comes back every 20 s
        self.h.clock.advance(19)
        self.assertEqual(self.register_from("192.0.2.1").code, 429)
        self.h.clock.advance(1)
        self.assertEqual(self.register_from("192.0.2.1").code, 201)
        self.assertEqual(self.register_from("192.0.2.1").code, 429)
        # a full period refills the whole burst
        self.h.clock.advance(60)
        for _ in range(3):
            self.assertEqual(self.register_from("192.0.2.1").code, 201)

    def test_spoofed_forwarded_for_is_not_trusted(self) -> None:
        # The client prepends its own value; the trusted proxy appends the real peer.
        for i in range(3):
            result = self.register_from(f"10.0.0.{i}, 192.0.2.9")
            self.assertEqual(result.code, 201)
        self.assertEqual(self.register_from("10.0.0.99, 192.0.2.9").code, 429)

    def test_untrusted_peer_counted_by_its_address(self) -> None:
        h = AuthServerHarness({"auth_server": {"registration": {"rate": "1/min"}}})
        first = h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI]},
            headers={"X-Forwarded-For": "192.0.2.1"},
        )
        second = h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI]},
            headers={"X-Forwarded-For": "192.0.2.2"},
        )
        self.assertEqual((first.code, second.code), (201, 429))


class TokenBucketTests(SynchronousTestCase):
    def test_bucket(self) -> None:
        clock = Clock()
        limiter = TokenBucketLimiter(MemoryRateCounters(clock, max_keys=2), 2, 10.0)
        self.assertEqual(self.successResultOf(limiter.acquire("a")), 0)
        self.assertEqual(self.successResultOf(limiter.acquire("a")), 0)
        self.assertAlmostEqual(self.successResultOf(limiter.acquire("a")), 5.0)
        clock.advance(5)
        self.assertEqual(self.successResultOf(limiter.acquire("a")), 0)
        self.assertEqual(TokenBucketLimiter.retry_after(0.2), "1")
        self.assertEqual(TokenBucketLimiter.retry_after(4.01), "5")

    def test_bounded_keys(self) -> None:
        counters = MemoryRateCounters(Clock(), max_keys=2)
        limiter = TokenBucketLimiter(counters, 1, 10.0)
        for key in ("a", "b", "c"):
            self.assertEqual(self.successResultOf(limiter.acquire(key)), 0)
        self.assertEqual(len(counters._buckets), 2)

    def test_limiters_sharing_counters_keep_apart(self) -> None:
        counters = MemoryRateCounters(Clock())
        registration = TokenBucketLimiter(counters, 1, 10.0, "registration")
        authorize = TokenBucketLimiter(counters, 1, 10.0, "authorize")
        self.assertEqual(self.successResultOf(registration.acquire("a")), 0)
        self.assertEqual(self.successResultOf(authorize.acquire("a")), 0)
        self.assertGreater(self.successResultOf(registration.acquire("a")), 0)


class ClientCapAndExpiryTests(SynchronousTestCase):
    def test_cap_evicts_oldest_never_used(self) -> None:
        h = AuthServerHarness(
            {"auth_server": {"registration": {"max_clients": 2, "rate": "100/min"}}}
        )
        first = h.register()
        h.clock.advance(1)
        second = h.register()
        h.tokens(first)  # first is now used
        h.clock.advance(1)
        third = h.register()
        get = h.storage.clients.get_client
        self.assertIsNotNone(self.successResultOf(get(first["client_id"])))
        self.assertIsNone(self.successResultOf(get(second["client_id"])))
        self.assertIsNotNone(self.successResultOf(get(third["client_id"])))

    def test_cap_of_used_clients_answers_503(self) -> None:
        h = AuthServerHarness(
            {"auth_server": {"registration": {"max_clients": 1, "rate": "100/min"}}}
        )
        h.tokens(h.register())
        result = h.request("POST", "/oauth/register", json_body={"redirect_uris": [GOOD_URI]})
        self.assertEqual(result.code, 503)
        self.assertEqual(result.json()["error"], "temporarily_unavailable")

    def test_unused_client_expires_and_use_renews(self) -> None:
        h = AuthServerHarness({"auth_server": {"registration": {"unused_client_ttl": "1d"}}})
        idle = h.register()
        active = h.register()
        verifier, challenge = s256_pair()
        h.clock.advance(86400 - 10)
        h.tokens(active)  # a use renews the client for another day
        h.clock.advance(20)
        result = h.get(h.authorize_url(idle, challenge))
        self.assertEqual(result.code, 400)
        self.assertIn(b"not registered", result.body)
        h.clock.advance(86400 - 30)
        self.assertEqual(h.get(h.authorize_url(active, challenge)).code, 302)
        del verifier


class RegistrationRobustnessTests(SynchronousTestCase):
    def test_lone_surrogate_name_is_refused_at_the_endpoint(self) -> None:
        h = AuthServerHarness()
        body = b'{"redirect_uris": ["' + GOOD_URI.encode() + b'"], "client_name": "\\ud800"}'
        result = h.request(
            "POST", "/oauth/register", data=body, headers={"Content-Type": "application/json"}
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_client_metadata"))

    def test_object_in_response_types_is_a_400(self) -> None:
        h = AuthServerHarness()
        result = h.request(
            "POST",
            "/oauth/register",
            json_body={"redirect_uris": [GOOD_URI], "response_types": [{}]},
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_client_metadata"))
