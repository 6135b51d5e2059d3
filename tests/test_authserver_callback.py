"""The callback from the upstream IdP: state handling, errors, code issuance."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from authproxy._testing_upstream import AuthServerHarness, HTTPResult, s256_pair
from authproxy.interfaces import UpstreamDenied, UpstreamError, UpstreamUnavailable
from authproxy.tokens import AUTHORIZATION_CODE

ISSUER = "http://127.0.0.1:8080"


class CallbackTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register()
        self.verifier, self.challenge = s256_pair()

    def to_idp(self, **params: Any) -> HTTPResult:
        """authorize -> the fake IdP's redirect to the callback (not yet followed)."""
        result = self.h.get(self.h.authorize_url(self.client, self.challenge, **params))
        return self.h.get(result.header("location") or "")

    def test_success(self) -> None:
        back = self.to_idp(scope="openid email")
        callback_url = back.header("location") or ""
        self.assertTrue(callback_url.startswith(ISSUER + "/oauth/callback?"))
        result = self.h.get(callback_url)
        self.assertEqual(result.code, 302)
        self.assertEqual(result.header("cache-control"), "no-store")
        self.assertEqual(result.header("referrer-policy"), "no-referrer")
        location = result.header("location") or ""
        self.assertTrue(location.startswith("http://127.0.0.1:33418/callback?"))
        params = result.location_params()
        self.assertEqual(set(params), {"code", "state", "iss"})
        self.assertEqual(params["state"], "client-state-123")
        self.assertEqual(params["iss"], ISSUER)
        code_id = self.h.opaque.verify(params["code"], AUTHORIZATION_CODE)
        assert code_id is not None
        record = self.successResultOf(self.h.storage.redeem_code(code_id))
        assert record is not None
        self.assertEqual(record.client_id, self.client["client_id"])
        self.assertEqual(record.redirect_uri, "http://127.0.0.1:33418/callback")
        self.assertEqual(record.code_challenge, self.challenge)
        self.assertEqual(record.scopes, ("openid", "email"))
        self.assertEqual(record.resource, "http://127.0.0.1:8080/mcp")
        self.assertIn(record.tsid, self.h.provider.sessions)
        self.assertEqual(record.expires_at, self.h.clock.seconds() + 300)
        self.assertEqual((record.name, record.email), ("Alice Example", "alice@example.com"))

    def test_user_id_is_stable_per_upstream_subject(self) -> None:
        def user_of() -> str:
            params = self.h.login(self.client, self.challenge)
            code_id = self.h.opaque.verify(params["code"], AUTHORIZATION_CODE)
            assert code_id is not None
            record = self.successResultOf(self.h.storage.redeem_code(code_id))
            assert record is not None
            return record.user_id

        alice1, alice2 = user_of(), user_of()
        self.h.provider.subject = "bob"
        bob = user_of()
        self.assertEqual(alice1, alice2)
        self.assertNotEqual(alice1, bob)
        self.assertNotIn("alice", alice1)

    def test_no_client_state(self) -> None:
        result = self.h.get(self.to_idp(state=None).header("location") or "")
        self.assertEqual(result.code, 302)
        self.assertNotIn("state", result.location_params())

    def assertExpiredPage(self, result: HTTPResult) -> None:
        self.assertEqual(result.code, 400)
        self.assertIn("text/html", result.header("content-type") or "")
        self.assertIsNone(result.header("location"))

    def test_missing_state(self) -> None:
        self.assertExpiredPage(self.h.get("/oauth/callback?code=x"))

    def test_unknown_state(self) -> None:
        self.assertExpiredPage(self.h.get("/oauth/callback?code=x&state=unknown"))

    def test_expired_state(self) -> None:
        back = self.to_idp()
        self.h.clock.advance(601)
        self.assertExpiredPage(self.h.get(back.header("location") or ""))

    def test_reused_state(self) -> None:
        url = self.to_idp().header("location") or ""
        self.assertEqual(self.h.get(url).code, 302)
        self.assertExpiredPage(self.h.get(url))

    def test_idp_error_redirects_access_denied(self) -> None:
        self.h.provider.deny = True
        result = self.h.get(self.to_idp().header("location") or "")
        self.assertEqual(result.code, 302)
        params = result.location_params()
        self.assertEqual(params["error"], "access_denied")
        self.assertEqual(params["state"], "client-state-123")
        self.assertEqual(params["iss"], ISSUER)
        self.assertNotIn("code", params)
        self.assertEqual(result.header("referrer-policy"), "no-referrer")

    def test_idp_temporarily_unavailable_passed_on(self) -> None:
        location = self.h.get(self.h.authorize_url(self.client, self.challenge)).header("location")
        state = parse_qs(urlsplit(location or "").query)["state"][0]
        result = self.h.get(f"/oauth/callback?error=temporarily_unavailable&state={state}")
        self.assertEqual(result.location_params()["error"], "temporarily_unavailable")

    def test_provider_denied(self) -> None:
        self.h.provider.finish_failure = UpstreamDenied("nope")
        result = self.h.get(self.to_idp().header("location") or "")
        self.assertEqual(result.location_params()["error"], "access_denied")

    def test_provider_unavailable(self) -> None:
        self.h.provider.finish_failure = UpstreamUnavailable("timeout", retry_after=3)
        result = self.h.get(self.to_idp().header("location") or "")
        self.assertEqual(result.code, 502)
        self.assertIn("text/html", result.header("content-type") or "")
        self.assertEqual(result.header("retry-after"), "3")

    def test_provider_error(self) -> None:
        self.h.provider.finish_failure = UpstreamError("id_token signature invalid")
        result = self.h.get(self.to_idp().header("location") or "")
        self.assertEqual(result.code, 502)
        self.assertIn(b"id_token signature invalid", result.body)
        self.assertIsNone(result.header("location"))

    def test_state_is_consumed_by_failures_too(self) -> None:
        self.h.provider.finish_failure = UpstreamError("bad")
        url = self.to_idp().header("location") or ""
        self.assertEqual(self.h.get(url).code, 502)
        self.h.provider.finish_failure = None
        self.assertExpiredPage(self.h.get(url))
