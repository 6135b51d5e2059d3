"""Token revocation (RFC 7009)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.upstream import AuthServerHarness, HTTPResult
from tests.test_authserver_token import claims_of


class RevocationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register()
        self.tokens = self.h.tokens(self.client)

    def revoke(self, token: str, client: dict[str, Any] | None = None, **extra: str) -> HTTPResult:
        form = {"token": token, "client_id": (client or self.client)["client_id"], **extra}
        return self.h.post_form("/oauth/revoke", form)

    def is_revoked(self, access_token: str) -> bool:
        jti = claims_of(self.h, access_token)["jti"]
        return bool(self.successResultOf(self.h.storage.revocations.is_jti_revoked(jti)))

    def test_refresh_token_revokes_the_family(self) -> None:
        second = self.h.refresh(self.client, self.tokens["refresh_token"]).json()
        result = self.revoke(second["refresh_token"], token_type_hint="refresh_token")
        self.assertEqual(result.code, 200)
        self.assertEqual(result.header("cache-control"), "no-store")
        self.assertEqual(result.body, b"")
        refused = self.h.refresh(self.client, second["refresh_token"])
        self.assertEqual((refused.code, refused.json()["error"]), (400, "invalid_grant"))
        self.assertTrue(self.is_revoked(self.tokens["access_token"]))
        self.assertTrue(self.is_revoked(second["access_token"]))
        tsid = claims_of(self.h, second["access_token"])["tsid"]
        self.assertEqual(self.h.provider.ended_sessions, [tsid])

    def test_access_token_is_deny_listed_until_exp(self) -> None:
        access = self.tokens["access_token"]
        self.assertFalse(self.is_revoked(access))
        self.assertEqual(self.revoke(access, token_type_hint="access_token").code, 200)
        self.assertTrue(self.is_revoked(access))
        # the refresh token (and the upstream session) stay usable
        self.assertEqual(self.h.refresh(self.client, self.tokens["refresh_token"]).code, 200)
        self.assertEqual(self.h.provider.ended_sessions, [])
        # the deny list entry lasts until the token's exp (plus the guard's leeway)
        self.h.clock.advance(900 + 61)
        self.assertFalse(self.is_revoked(access))

    def test_wrong_hint_is_ignored(self) -> None:
        self.assertEqual(
            self.revoke(self.tokens["access_token"], token_type_hint="refresh_token").code, 200
        )
        self.assertTrue(self.is_revoked(self.tokens["access_token"]))

    def test_unknown_tokens_answer_200(self) -> None:
        code, _ = self.h.opaque.mint("ac")
        for token in ("garbage", "rt_abc.def", "a.b.c", code, self.tokens["refresh_token"] + "x"):
            self.assertEqual(self.revoke(token).code, 200, token)
        self.assertEqual(self.h.refresh(self.client, self.tokens["refresh_token"]).code, 200)

    def test_token_of_another_client_is_left_alone(self) -> None:
        other = self.h.register()
        self.assertEqual(self.revoke(self.tokens["refresh_token"], other).code, 200)
        self.assertEqual(self.revoke(self.tokens["access_token"], other).code, 200)
        self.assertFalse(self.is_revoked(self.tokens["access_token"]))
        self.assertEqual(self.h.refresh(self.client, self.tokens["refresh_token"]).code, 200)

    def test_client_required(self) -> None:
        result = self.h.post_form("/oauth/revoke", {"token": self.tokens["refresh_token"]})
        self.assertEqual((result.code, result.json()["error"]), (401, "invalid_client"))
        result = self.revoke(self.tokens["refresh_token"], {"client_id": "nobody"})
        self.assertEqual((result.code, result.json()["error"]), (401, "invalid_client"))

    def test_token_required(self) -> None:
        result = self.h.post_form("/oauth/revoke", {"client_id": self.client["client_id"]})
        self.assertEqual((result.code, result.json()["error"]), (400, "invalid_request"))

    def test_cors(self) -> None:
        result = self.h.request("OPTIONS", "/oauth/revoke")
        self.assertEqual(result.code, 204)
        self.assertEqual(result.header("access-control-allow-origin"), "*")
