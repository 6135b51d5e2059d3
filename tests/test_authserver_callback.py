"""The callback from the upstream IdP: state handling, errors, code issuance."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.upstream import AuthServerHarness, HTTPResult, s256_pair
from authproxy.tokens import AUTHORIZATION_CODE
from authproxy.upstream.interface import UpstreamDenied, UpstreamError, UpstreamUnavailable

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
        record = self.successResultOf(self.h.storage.codes.redeem_code(code_id))
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
            record = self.successResultOf(self.h.storage.codes.redeem_code(code_id))
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


class BrowserBindingTests(SynchronousTestCase):
    """The browser that was sent to the IdP is the only one whose callback issues a code.

    The attack: someone starts (and, with a consent page, approves) an authorization for
    their own client in their own browser, then sends the link to the IdP to a victim. The
    victim signs in; without the binding the code would go to the attacker's redirect URI.
    """

    def start(self, consent: str) -> tuple[AuthServerHarness, str]:
        """The attacker's browser up to the IdP: (its harness, the IdP link it would send)."""
        attacker = AuthServerHarness({"auth_server": {"consent": consent}})
        client = attacker.register(redirect_uris=["https://attacker.example/cb"])
        _, challenge = s256_pair()
        result = attacker.get(attacker.authorize_url(client, challenge))
        if consent != "skip":
            self.assertEqual(result.code, 200)
            fields = dict(
                re.findall(r'name="(state|csrf_token)" value="([^"]+)"', result.body.decode())
            )
            result = attacker.post_form("/oauth/consent", {**fields, "decision": "approve"})
        self.assertEqual(result.code, 302, result.body)
        idp_link = result.header("location") or ""
        self.assertIn("/_fake_idp/authorize?", idp_link)
        return attacker, idp_link

    def assertRefusedWithoutCode(self, harness: AuthServerHarness, result: HTTPResult) -> None:
        self.assertEqual(result.code, 403)
        self.assertIn("text/html", result.header("content-type") or "")
        self.assertIsNone(result.header("location"))
        self.assertIn(b"another browser", result.body)
        # The IdP's code was never even exchanged: no session, so no code could exist.
        self.assertEqual(harness.provider.sessions, {})

    def test_callback_from_another_browser_is_refused(self) -> None:
        for consent in ("always", "remember", "skip"):
            with self.subTest(consent=consent):
                attacker, idp_link = self.start(consent)
                victim = attacker.other_browser()
                back = victim.get(idp_link)  # the victim signs in at the IdP
                self.assertEqual(back.code, 302)
                result = victim.get(back.header("location") or "")
                self.assertRefusedWithoutCode(attacker, result)

    def test_refused_callback_does_not_consume_the_login(self) -> None:
        owner, idp_link = self.start("skip")
        back = owner.get(idp_link)
        callback_url = back.header("location") or ""
        self.assertEqual(owner.other_browser().get(callback_url).code, 403)
        # The browser that started the login can still finish it.
        result = owner.get(callback_url)
        self.assertEqual(result.code, 302)
        self.assertIn("code", result.location_params())

    def test_binding_cookie_attributes_and_cleared_on_completion(self) -> None:
        owner, idp_link = self.start("skip")
        state = parse_qs(urlsplit(idp_link).query)["state"][0]
        started = owner.get(owner.authorize_url(owner.register(), s256_pair()[1]))
        [cookie] = [c for c in started.headers["set-cookie"] if "authproxy-login-" in c]
        attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
        self.assertTrue({"httponly", "samesite=lax", "path=/", "max-age=600"} <= attributes)
        self.assertNotIn(state, cookie)
        back = owner.get(idp_link)
        result = owner.get(back.header("location") or "")
        self.assertEqual(result.code, 302)
        [cleared] = [c for c in result.headers["set-cookie"] if "authproxy-login-" in c]
        self.assertIn("Max-Age=0", cleared)

    def test_cookie_of_another_login_is_refused(self) -> None:
        # The attacker copies their own (valid) binding cookie value under the victim
        # login's name: the value is bound to one login only.
        h, link_a = self.start("skip")
        victim = h.other_browser()
        link_b = victim.get(victim.authorize_url(victim.register(), s256_pair()[1])).header(
            "location"
        )
        state_a = parse_qs(urlsplit(link_a).query)["state"][0]
        state_b = parse_qs(urlsplit(link_b or "").query)["state"][0]
        binding = h.binding
        value_a = binding.value(state_a)
        back = h.other_browser().get(link_b or "")
        result = h.other_browser().get(
            back.header("location") or "", headers={"Cookie": f"{binding.name(state_b)}={value_a}"}
        )
        self.assertRefusedWithoutCode(h, result)

    def test_https_login_cookie_is_secure_host_prefixed(self) -> None:
        h = AuthServerHarness({"server": {"public_url": "https://auth.example"}})
        started = h.get(h.authorize_url(h.register(), s256_pair()[1]))
        [cookie] = [c for c in started.headers["set-cookie"] if "authproxy-login-" in c]
        self.assertTrue(cookie.startswith("__Host-authproxy-login-"))
        self.assertIn("Secure", cookie)
        back = h.get(started.header("location") or "")
        self.assertEqual(h.get(back.header("location") or "").code, 302)

    def test_login_cookie_survives_secret_rotation(self) -> None:
        from authproxy.authserver.login_binding import LoginBinding
        from authproxy.keys.ring import KeyRing, KeySet, generate_ephemeral_key

        key = generate_ephemeral_key()
        old = LoginBinding(KeyRing(KeySet((key,), (b"a" * 32,))), secure=False)
        rotated = LoginBinding(KeyRing(KeySet((key,), (b"b" * 32, b"a" * 32))), secure=False)
        removed = LoginBinding(KeyRing(KeySet((key,), (b"b" * 32,))), secure=False)
        for binding, accepted in ((rotated, True), (removed, False)):
            request = _CookieRequest({old.name("s"): old.value("s")})
            self.assertEqual(binding.is_bound(request, "s"), accepted)  # type: ignore[arg-type]
        # A valid value of another login is refused under this login's name.
        other = _CookieRequest({old.name("s"): old.value("t")})
        self.assertFalse(old.is_bound(other, "s"))  # type: ignore[arg-type]


class _CookieRequest:
    """Just enough of a Request for LoginBinding.is_bound."""

    def __init__(self, cookies: dict[str, str]) -> None:
        self._cookies = {k.encode(): v.encode() for k, v in cookies.items()}

    def getCookie(self, name: bytes) -> bytes | None:
        return self._cookies.get(name)
