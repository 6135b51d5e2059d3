"""/metrics event counters: each moves on its event (the authorization server's side)."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.upstream import AuthServerHarness, s256_pair


class AuthServerEventTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()

    def count(self, name: str, **labels: str) -> float:
        value = self.h.events.registry.get_sample_value(name + "_total", labels)
        return 0.0 if value is None else value

    def test_login_grant_and_registration_succeed(self) -> None:
        self.h.tokens()
        self.assertEqual(self.count("authproxy_registrations", outcome="success"), 1)
        self.assertEqual(self.count("authproxy_logins", outcome="success"), 1)
        self.assertEqual(
            self.count(
                "authproxy_token_grants", grant_type="authorization_code", outcome="success"
            ),
            1,
        )

    def test_refused_registration_counted_by_error(self) -> None:
        self.h.request("POST", "/oauth/register", json_body={"redirect_uris": []})
        self.assertEqual(self.count("authproxy_registrations", outcome="invalid_redirect_uri"), 1)

    def test_code_replay(self) -> None:
        client = self.h.register()
        verifier, challenge = s256_pair()
        code = self.h.login(client, challenge)["code"]
        self.assertEqual(self.h.redeem(client, code, verifier).code, 200)
        self.assertEqual(self.h.redeem(client, code, verifier).code, 400)
        self.assertEqual(self.count("authproxy_authorization_code_replay"), 1)
        self.assertEqual(
            self.count(
                "authproxy_token_grants", grant_type="authorization_code", outcome="invalid_grant"
            ),
            1,
        )

    def test_refresh_reuse_and_revocation(self) -> None:
        client = self.h.register()
        first = self.h.tokens(client)
        second = self.h.refresh(client, first["refresh_token"]).json()
        self.assertEqual(
            self.count("authproxy_token_grants", grant_type="refresh_token", outcome="success"), 1
        )
        self.h.clock.advance(31)
        self.h.refresh(client, first["refresh_token"])
        self.assertEqual(self.count("authproxy_refresh_token_reuse"), 1)
        third = self.h.tokens(client)
        form = {"token": third["refresh_token"], "client_id": client["client_id"]}
        self.h.post_form("/oauth/revoke", form)
        form["token"] = third["access_token"]
        self.h.post_form("/oauth/revoke", form)
        self.assertEqual(self.count("authproxy_revocations", token_type="refresh_token"), 1)
        self.assertEqual(self.count("authproxy_revocations", token_type="access_token"), 1)
        self.assertTrue(second)

    def test_unsupported_grant_type_is_other(self) -> None:
        client = self.h.register()
        form = {"grant_type": "password", "client_id": client["client_id"]}
        self.assertEqual(self.h.post_form("/oauth/token", form).code, 400)
        self.assertEqual(
            self.count(
                "authproxy_token_grants", grant_type="other", outcome="unsupported_grant_type"
            ),
            1,
        )

    def test_expired_login_state(self) -> None:
        self.h.get("/oauth/callback?state=unknown&code=x")
        self.assertEqual(self.count("authproxy_logins", outcome="expired"), 1)

    def test_rate_limit_refusal_by_limit(self) -> None:
        h = self.h = AuthServerHarness({"auth_server": {"registration": {"rate": "1/min"}}})
        h.register()
        result = h.request("POST", "/oauth/register", json_body={"redirect_uris": []})
        self.assertEqual(result.code, 429)
        self.assertEqual(self.count("authproxy_rate_limit_refusals", limit="registration"), 1)
        self.assertEqual(self.count("authproxy_registrations", outcome="too_many_requests"), 1)
