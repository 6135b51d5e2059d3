"""The authorization endpoint: client and redirect URI checks, redirect errors, hand-off."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.limits import MAX_CLIENT_STATE, MAX_SCOPE_PARAMETER
from authproxy.authserver.redirect_uri import redirect_uri_matches
from authproxy.storage.models import RegisteredClient
from authproxy.testing.upstream import FAKE_IDP_PATH, AuthServerHarness, s256_pair
from authproxy.upstream.interface import UpstreamError, UpstreamUnavailable

ISSUER = "http://127.0.0.1:8080"

# (registered, requested, matches)
LOOPBACK_TABLE = [
    ("http://127.0.0.1/callback", "http://127.0.0.1/callback", True),
    ("http://127.0.0.1/callback", "http://127.0.0.1:51234/callback", True),
    ("http://127.0.0.1:8000/callback", "http://127.0.0.1:9000/callback", True),
    ("http://127.0.0.1:8000/callback", "http://127.0.0.1/callback", True),
    ("http://[::1]:8000/cb", "http://[::1]:1234/cb", True),
    ("http://localhost:8000/cb", "http://localhost:1234/cb", True),
    ("http://127.0.0.1:8000/cb?a=1", "http://127.0.0.1:9/cb?a=1", True),
    # different hosts
    ("http://localhost:8000/cb", "http://127.0.0.1:8000/cb", False),
    ("http://127.0.0.1:8000/cb", "http://localhost:8000/cb", False),
    ("http://127.0.0.1:8000/cb", "http://127.0.0.2:8000/cb", False),
    ("http://127.0.0.1:8000/cb", "http://[::1]:8000/cb", False),
    # path and query exact
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/cb/", False),
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/CB", False),
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/cb?x=1", False),
    ("http://127.0.0.1:8000/cb?a=1", "http://127.0.0.1:9000/cb?a=2", False),
    ("http://127.0.0.1:8000/cb?", "http://127.0.0.1:9000/cb", False),
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/cb#x", False),
    # scheme
    ("http://127.0.0.1:8000/cb", "https://127.0.0.1:9000/cb", False),
    ("https://127.0.0.1:8000/cb", "https://127.0.0.1:9000/cb", False),
    # userinfo tricks
    ("http://127.0.0.1:8000/cb", "http://evil@127.0.0.1:9000/cb", False),
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000@evil.com/cb", False),
    # non-loopback hosts are exact
    ("https://app.example.com/cb", "https://app.example.com/cb", True),
    ("https://app.example.com/cb", "https://app.example.com:443/cb", False),
    ("https://app.example.com:8443/cb", "https://app.example.com:9443/cb", False),
    ("http://192.168.0.1:80/cb", "http://192.168.0.1:81/cb", False),
    ("cursor://anysphere.cursor-retrieval/cb", "cursor://anysphere.cursor-retrieval/cb", True),
    ("cursor://anysphere.cursor-retrieval/cb", "cursor://anysphere.cursor-retrieval/cb2", False),
    # bad port
    ("http://127.0.0.1:8000/cb", "http://127.0.0.1:99999/cb", False),
]


class LoopbackMatchingTests(SynchronousTestCase):
    def test_table(self) -> None:
        for registered, requested, expected in LOOPBACK_TABLE:
            self.assertEqual(
                redirect_uri_matches(registered, requested),
                expected,
                f"{registered} vs {requested}",
            )

    def test_through_the_endpoint(self) -> None:
        h = AuthServerHarness()
        client = h.register(redirect_uris=["http://127.0.0.1/callback"])
        _, challenge = s256_pair()
        ok = h.get(
            h.authorize_url(client, challenge, redirect_uri="http://127.0.0.1:4567/callback")
        )
        self.assertEqual(ok.code, 302)
        bad = h.get(
            h.authorize_url(client, challenge, redirect_uri="http://localhost:4567/callback")
        )
        self.assertEqual(bad.code, 400)


class AuthorizeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register(redirect_uris=["http://127.0.0.1:33418/callback"])
        self.verifier, self.challenge = s256_pair()

    def authorize(self, **params: Any) -> Any:
        return self.h.get(self.h.authorize_url(self.client, self.challenge, **params))

    def assertHTMLError(self, result: Any, text: bytes) -> None:
        self.assertEqual(result.code, 400)
        self.assertIsNone(result.header("location"))
        self.assertIn("text/html", result.header("content-type"))
        self.assertIn(text, result.body)

    def assertRedirectError(
        self, result: Any, error: str, state: str | None = "client-state-123"
    ) -> None:
        self.assertEqual(result.code, 302, result.body)
        location = result.header("location")
        self.assertTrue(location.startswith("http://127.0.0.1:33418/callback?"), location)
        params = result.location_params()
        self.assertEqual(params["error"], error)
        self.assertTrue(params["error_description"])
        self.assertEqual(params.get("state"), state)
        self.assertEqual(params["iss"], ISSUER)
        self.assertNotIn("code", params)

    def test_hands_off_to_upstream(self) -> None:
        result = self.authorize(scope="openid email", resource="http://127.0.0.1:8080/mcp")
        self.assertEqual(result.code, 302)
        self.assertEqual(result.header("cache-control"), "no-store")
        location = urlsplit(result.header("location"))
        self.assertEqual(location.path, FAKE_IDP_PATH)
        state = parse_qs(location.query)["state"][0]
        self.assertNotEqual(state, "client-state-123")
        self.assertGreaterEqual(len(state), 40)
        pending = self.successResultOf(self.h.storage.logins.get_pending(state))
        assert pending is not None
        self.assertEqual(pending.client_id, self.client["client_id"])
        self.assertEqual(pending.client_state, "client-state-123")
        self.assertEqual(pending.redirect_uri, "http://127.0.0.1:33418/callback")
        self.assertEqual(pending.code_challenge, self.challenge)
        self.assertEqual(pending.code_challenge_method, "S256")
        self.assertEqual(pending.scopes, ("openid", "email"))
        self.assertEqual(pending.resource, "http://127.0.0.1:8080/mcp")
        self.assertTrue(pending.upstream_code_verifier)
        self.assertTrue(pending.upstream_nonce)
        self.assertGreater(pending.expires_at, self.h.clock.seconds())

    def test_client_state_longer_than_the_cap_is_refused(self) -> None:
        long_state = "s" * (MAX_CLIENT_STATE + 1)
        result = self.authorize(state=long_state)
        # Not echoed back: a state that size is not the client's.
        self.assertRedirectError(result, "invalid_request", state=None)
        self.assertIn(
            f"state is longer than {MAX_CLIENT_STATE}",
            result.location_params()["error_description"],
        )
        self.assertEqual(self.h.provider.idp_requests, [])
        self.assertEqual(self.authorize(state="s" * MAX_CLIENT_STATE).code, 302)
        self.assertEqual(len(self.h.provider._started), 1)

    def test_scope_parameter_longer_than_the_cap_is_refused(self) -> None:
        result = self.authorize(scope="openid " * (MAX_SCOPE_PARAMETER // 7 + 1))
        self.assertRedirectError(result, "invalid_request")
        self.assertIn("scope", result.location_params()["error_description"])

    def test_prompt_none_answers_login_required_without_pages(self) -> None:
        result = self.authorize(prompt="none")
        self.assertRedirectError(result, "login_required")
        self.assertEqual(self.h.provider._started, {})
        # Also when a consent page would be shown first: the login is still needed upstream.
        h = AuthServerHarness({"auth_server": {"consent": "always"}})
        client = h.register()
        result = h.get(h.authorize_url(client, self.challenge, prompt="none"))
        self.assertEqual(result.code, 302, result.body)
        self.assertEqual(result.location_params()["error"], "consent_required")
        self.assertEqual(h.provider._started, {})
        # A remembered consent needs no page: only the login is missing.
        h = AuthServerHarness({"auth_server": {"consent": "remember"}})
        client = h.register()
        result = h.get(h.authorize_url(client, self.challenge, prompt="none"))
        self.assertEqual(result.location_params()["error"], "consent_required")
        page = h.get(h.authorize_url(client, self.challenge))
        fields = dict(re.findall(r'name="(state|csrf_token)" value="([^"]+)"', page.body.decode()))
        h.post_form("/oauth/consent", {**fields, "decision": "approve"})  # sets the cookie
        result = h.get(h.authorize_url(client, self.challenge, prompt="none"))
        self.assertEqual(result.location_params()["error"], "login_required")

    def test_prompt_none_among_other_values_is_invalid(self) -> None:
        self.assertRedirectError(self.authorize(prompt="none login"), "invalid_request")

    def test_other_prompt_values_still_work(self) -> None:
        self.assertEqual(
            urlsplit(self.authorize(prompt="login").header("location")).path, FAKE_IDP_PATH
        )

    def test_each_request_gets_a_fresh_state(self) -> None:
        first = self.authorize().header("location")
        second = self.authorize().header("location")
        self.assertNotEqual(first, second)

    def test_authorize_marks_client_used(self) -> None:
        self.authorize()
        stored = self.successResultOf(self.h.storage.clients.get_client(self.client["client_id"]))
        assert stored is not None
        self.assertIsNotNone(stored.last_used_at)

    def test_unknown_client_is_an_html_page(self) -> None:
        self.assertHTMLError(self.authorize(client_id="nope"), b"not registered")

    def test_missing_client_id(self) -> None:
        self.assertHTMLError(self.authorize(client_id=None), b"client_id")

    def test_unregistered_redirect_uri_is_an_html_page(self) -> None:
        for uri in (
            "https://evil.example/callback",
            "http://127.0.0.1:33418/other",
            "http://localhost:33418/callback",
        ):
            self.assertHTMLError(self.authorize(redirect_uri=uri), b"not registered")

    def test_missing_redirect_uri_with_several_registered(self) -> None:
        # OAuth 2.1 / RFC 6749 §3.1.2.3: which one is meant cannot be known
        client = self.h.register(
            redirect_uris=["http://127.0.0.1:33418/callback", "http://127.0.0.1:33418/other"]
        )
        result = self.h.get(self.h.authorize_url(client, self.challenge, redirect_uri=None))
        self.assertHTMLError(result, b"redirect URI")

    def test_missing_redirect_uri_with_one_registered_means_that_one(self) -> None:
        callback = self.h.login(self.client, self.challenge, redirect_uri=None)
        self.assertEqual(callback["state"], "client-state-123")
        self.assertTrue(callback["code"])

    def test_omitted_redirect_uri_stored_before_the_parser_tightened_is_refused(self) -> None:
        # review 2 F2: a stored URI the parser now refuses was followed when omitted
        stale = "http://evil.example\\@127.0.0.1/cb"  # Python: 127.0.0.1; browsers: evil.example
        client = RegisteredClient(
            client_id="legacy-client",
            redirect_uris=(stale,),
            grant_types=("authorization_code",),
            response_types=("code",),
            scopes=(),
            client_name=None,
            token_endpoint_auth_method="none",
            created_at=self.h.clock.seconds(),
        )
        self.successResultOf(self.h.storage.clients.add_client(client))
        document = {"client_id": "legacy-client", "redirect_uris": [stale]}
        for params in ({}, {"response_type": "token"}):  # the latter would redirect an error
            result = self.h.get(
                self.h.authorize_url(document, self.challenge, redirect_uri=None, **params)
            )
            self.assertHTMLError(result, b"not registered")

    def test_empty_redirect_uri_is_not_an_omitted_one(self) -> None:
        self.assertHTMLError(self.authorize(redirect_uri=""), b"redirect URI")

    def test_repeated_client_id(self) -> None:
        url = self.h.authorize_url(self.client, self.challenge) + "&client_id=other"
        self.assertHTMLError(self.h.get(url), b"client_id")

    def test_response_type(self) -> None:
        self.assertRedirectError(self.authorize(response_type="token"), "unsupported_response_type")
        self.assertRedirectError(self.authorize(response_type=None), "invalid_request")

    def test_pkce_required(self) -> None:
        self.assertRedirectError(self.authorize(code_challenge=None), "invalid_request")
        self.assertRedirectError(self.authorize(code_challenge_method="plain"), "invalid_request")
        self.assertRedirectError(self.authorize(code_challenge_method=None), "invalid_request")
        self.assertRedirectError(self.authorize(code_challenge="short"), "invalid_request")

    def test_scope(self) -> None:
        self.assertRedirectError(self.authorize(scope="openid admin"), "invalid_scope")
        limited = self.h.register(scope="openid")
        result = self.h.get(self.h.authorize_url(limited, self.challenge, scope="openid email"))
        self.assertEqual(result.location_params()["error"], "invalid_scope")

    def test_no_scope_means_registered_scopes(self) -> None:
        limited = self.h.register(scope="openid email")
        result = self.h.get(self.h.authorize_url(limited, self.challenge))
        state = parse_qs(urlsplit(result.header("location") or "").query)["state"][0]
        pending = self.successResultOf(self.h.storage.logins.get_pending(state))
        assert pending is not None
        self.assertEqual(pending.scopes, ("openid", "email"))

    def test_resource(self) -> None:
        self.assertRedirectError(
            self.authorize(resource="https://other.example/mcp"), "invalid_target"
        )
        url = self.h.authorize_url(
            self.client, self.challenge, resource="http://127.0.0.1:8080/mcp"
        )
        self.assertRedirectError(
            self.h.get(url + "&resource=http%3A%2F%2F127.0.0.1%3A8080%2Fmcp"), "invalid_target"
        )

    def test_absent_resource_defaults_to_sole_audience(self) -> None:
        state = parse_qs(urlsplit(self.authorize().header("location")).query)["state"][0]
        pending = self.successResultOf(self.h.storage.logins.get_pending(state))
        assert pending is not None
        self.assertEqual(pending.resource, "http://127.0.0.1:8080/mcp")

    def test_without_client_state(self) -> None:
        self.assertRedirectError(
            self.authorize(state=None, response_type="x"), "unsupported_response_type", state=None
        )

    def test_repeated_parameter(self) -> None:
        url = self.h.authorize_url(self.client, self.challenge) + "&scope=openid&scope=email"
        self.assertRedirectError(self.h.get(url), "invalid_request")

    def test_error_redirect_keeps_registered_query(self) -> None:
        client = self.h.register(redirect_uris=["https://app.example.com/cb?tenant=7"])
        result = self.h.get(self.h.authorize_url(client, self.challenge, response_type="token"))
        location = result.header("location") or ""
        self.assertTrue(location.startswith("https://app.example.com/cb?tenant=7&error="))

    def test_upstream_unavailable_page(self) -> None:
        self.h.provider.start_failure = UpstreamUnavailable("discovery pending", retry_after=7)
        result = self.authorize()
        self.assertEqual(result.code, 502)
        self.assertIn("text/html", result.header("content-type"))
        self.assertEqual(result.header("retry-after"), "7")
        self.assertIsNone(result.header("location"))

    def test_unreachable_idp_gets_error_page_not_redirect(self) -> None:
        self.h.provider.unreachable = True
        result = self.authorize()
        self.assertEqual(result.code, 502)
        self.assertIn("text/html", result.header("content-type"))
        self.assertIsNone(result.header("location"))
        self.h.provider.unreachable = False
        self.assertEqual(self.authorize().code, 302)

    def test_upstream_error_page(self) -> None:
        self.h.provider.start_failure = UpstreamError("bad metadata")
        result = self.authorize()
        self.assertEqual(result.code, 502)
        self.assertIn(b"bad metadata", result.body)

    def test_post_not_allowed(self) -> None:
        self.assertEqual(self.h.request("POST", "/oauth/authorize").code, 405)


class AuthorizeRateLimitTests(SynchronousTestCase):
    def test_limit_per_address_with_retry_after_then_refills(self) -> None:
        h = AuthServerHarness({"auth_server": {"authorize_rate": "3/min"}})
        client = h.register(redirect_uris=["http://127.0.0.1:33418/callback"])
        _, challenge = s256_pair()
        codes = [h.get(h.authorize_url(client, challenge)).code for _ in range(4)]
        self.assertEqual(codes[:3], [302, 302, 302])
        refused = h.get(h.authorize_url(client, challenge))
        self.assertEqual(refused.code, 429)
        self.assertIn("text/html", refused.header("content-type"))
        self.assertEqual(refused.header("retry-after"), "20")
        self.assertIsNone(refused.header("location"))
        h.clock.advance(20)
        self.assertEqual(h.get(h.authorize_url(client, challenge)).code, 302)
