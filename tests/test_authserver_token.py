"""The token endpoint: code redemption, refresh rotation, replay and reuse detection."""

from __future__ import annotations

import base64
import json
from typing import Any

from jwcrypto.jwk import JWKSet
from jwcrypto.jwt import JWT
from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.upstream import AuthServerHarness, HTTPResult, s256_pair
from authproxy.tokens import REFRESH_TOKEN

ISSUER = "http://127.0.0.1:8080"
AUDIENCE = "http://127.0.0.1:8080/mcp"


def claims_of(h: AuthServerHarness, token: str) -> dict[str, Any]:
    """Verify ``token`` against the published JWKS (as a resource server would)."""
    jwks = JWKSet.from_json(h.get("/.well-known/jwks.json").body)
    jwt = JWT(jwt=token, key=jwks, check_claims=False)
    header = json.loads(jwt.header)
    assert header["typ"] == "at+jwt", header
    claims: dict[str, Any] = json.loads(jwt.claims)
    return claims


class Base(SynchronousTestCase):
    config: dict[str, Any] = {}

    def setUp(self) -> None:
        self.h = AuthServerHarness(self.config)
        self.client = self.h.register(scope="openid email offline_access")
        self.verifier, self.challenge = s256_pair()

    def code(self, **params: str) -> str:
        return self.h.login(self.client, self.challenge, **params)["code"]

    def assertError(self, result: HTTPResult, status: int, error: str) -> None:
        self.assertEqual((result.code, result.json().get("error")), (status, error), result.body)
        self.assertTrue(result.json().get("error_description"))
        self.assertEqual(result.header("cache-control"), "no-store")


class AuthorizationCodeGrantTests(Base):
    def test_full_pkce_flow(self) -> None:
        callback = self.h.login(self.client, self.challenge, scope="openid email")
        self.assertEqual(callback["state"], "client-state-123")
        self.assertEqual(callback["iss"], ISSUER)
        result = self.h.redeem(self.client, callback["code"], self.verifier)
        self.assertEqual(result.code, 200, result.body)
        self.assertEqual(result.header("cache-control"), "no-store")
        self.assertEqual(result.header("pragma"), "no-cache")
        self.assertEqual(result.header("content-type"), "application/json")
        body = result.json()
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["expires_in"], 900)
        self.assertEqual(body["scope"], "openid email")
        self.assertTrue(body["refresh_token"].startswith("rt_"))
        claims = claims_of(self.h, body["access_token"])
        self.assertEqual(claims["iss"], ISSUER)
        self.assertEqual(claims["aud"], AUDIENCE)
        self.assertEqual(claims["client_id"], self.client["client_id"])
        self.assertEqual(claims["scope"], "openid email")
        self.assertEqual(claims["scp"], ["openid", "email"])
        self.assertEqual(claims["iat"], int(self.h.clock.seconds()))
        self.assertEqual(claims["exp"], claims["iat"] + 900)
        self.assertIn(claims["tsid"], self.h.provider.sessions)
        self.assertTrue(claims["sub"])
        self.assertTrue(claims["jti"])
        self.assertEqual(claims["name"], "Alice Example")
        self.assertEqual(claims["email"], "alice@example.com")
        stored = self.successResultOf(self.h.storage.clients.get_client(self.client["client_id"]))
        assert stored is not None
        self.assertIsNotNone(stored.last_used_at)

    def test_refresh_token_without_offline_access(self) -> None:
        body = self.h.tokens(self.client, scope="openid")
        self.assertEqual(body["scope"], "openid")
        self.assertIn("refresh_token", body)

    def test_no_refresh_token_without_the_grant(self) -> None:
        client = self.h.register(grant_types=["authorization_code"])
        body = self.h.tokens(client)
        self.assertNotIn("refresh_token", body)

    def test_wrong_verifier(self) -> None:
        other, _ = s256_pair()
        self.assertError(self.h.redeem(self.client, self.code(), other), 400, "invalid_grant")

    def test_malformed_verifier(self) -> None:
        self.assertError(self.h.redeem(self.client, self.code(), "short"), 400, "invalid_grant")

    def test_missing_verifier(self) -> None:
        result = self.h.redeem(self.client, self.code(), None)  # type: ignore[arg-type]
        self.assertError(result, 400, "invalid_grant")
        self.assertIn("code_verifier", result.json()["error_description"])

    def test_unknown_code(self) -> None:
        forged = "ac_" + "A" * 43 + "." + "B" * 43
        self.assertError(self.h.redeem(self.client, forged, self.verifier), 400, "invalid_grant")
        # a genuine-looking code this server never stored
        code, _ = self.h.opaque.mint("ac")
        self.assertError(self.h.redeem(self.client, code, self.verifier), 400, "invalid_grant")

    def test_expired_code(self) -> None:
        code = self.code()
        self.h.clock.advance(301)
        self.assertError(self.h.redeem(self.client, code, self.verifier), 400, "invalid_grant")

    def test_missing_redirect_uri(self) -> None:
        result = self.h.redeem(self.client, self.code(), self.verifier, redirect_uri=None)  # type: ignore[arg-type]
        self.assertError(result, 400, "invalid_grant")

    def test_mismatched_redirect_uri(self) -> None:
        for uri in ("http://127.0.0.1:33418/other", "http://127.0.0.1:9999/callback"):
            result = self.h.redeem(self.client, self.code(), self.verifier, redirect_uri=uri)
            self.assertError(result, 400, "invalid_grant")

    def test_redirect_uri_must_be_the_one_used_at_authorize(self) -> None:
        # loopback matching allowed another port at authorize; the token request must repeat it
        code = self.code(redirect_uri="http://127.0.0.1:5555/callback")
        self.assertError(self.h.redeem(self.client, code, self.verifier), 400, "invalid_grant")
        code = self.code(redirect_uri="http://127.0.0.1:5555/callback")
        ok = self.h.redeem(
            self.client, code, self.verifier, redirect_uri="http://127.0.0.1:5555/callback"
        )
        self.assertEqual(ok.code, 200)

    def test_redirect_uri_omitted_at_authorize_may_be_omitted_at_token(self) -> None:
        # RFC 6749 §4.1.3: required only when the authorization request included it
        code = self.code(redirect_uri=None)
        result = self.h.redeem(self.client, code, self.verifier, redirect_uri=None)  # type: ignore[arg-type]
        self.assertEqual(result.code, 200, result.body)
        # sent anyway, it must still be the registered one
        code = self.code(redirect_uri=None)
        self.assertEqual(self.h.redeem(self.client, code, self.verifier).code, 200)
        code = self.code(redirect_uri=None)
        other = self.h.redeem(
            self.client, code, self.verifier, redirect_uri="http://127.0.0.1:33418/other"
        )
        self.assertError(other, 400, "invalid_grant")

    def test_unknown_client(self) -> None:
        result = self.h.redeem(self.client, self.code(), self.verifier, client_id="nobody")
        self.assertError(result, 401, "invalid_client")

    def test_missing_client(self) -> None:
        result = self.h.redeem(self.client, self.code(), self.verifier, client_id=None)  # type: ignore[arg-type]
        self.assertError(result, 401, "invalid_client")

    def test_code_of_another_client(self) -> None:
        other = self.h.register()
        result = self.h.redeem(other, self.code(), self.verifier)
        self.assertError(result, 400, "invalid_grant")

    def test_client_id_by_basic_auth(self) -> None:
        basic = base64.b64encode(f"{self.client['client_id']}:".encode()).decode()
        form = {
            "grant_type": "authorization_code",
            "code": self.code(),
            "redirect_uri": self.client["redirect_uris"][0],
            "code_verifier": self.verifier,
        }
        result = self.h.post_form("/oauth/token", form, headers={"Authorization": f"Basic {basic}"})
        self.assertEqual(result.code, 200)
        basic = base64.b64encode(b"nobody:").decode()
        result = self.h.post_form("/oauth/token", form, headers={"Authorization": f"Basic {basic}"})
        self.assertError(result, 401, "invalid_client")
        self.assertEqual(result.header("www-authenticate"), 'Basic realm="authproxy"')

    def test_client_secret_refused(self) -> None:
        basic = base64.b64encode(f"{self.client['client_id']}:secret".encode()).decode()
        result = self.h.post_form(
            "/oauth/token",
            {"grant_type": "authorization_code", "code": "x"},
            headers={"Authorization": f"Basic {basic}"},
        )
        self.assertError(result, 401, "invalid_client")

    def test_code_used_as_refresh_token(self) -> None:
        result = self.h.refresh(self.client, self.code())
        self.assertError(result, 400, "invalid_grant")

    def test_refresh_token_used_as_code(self) -> None:
        body = self.h.tokens(self.client)
        result = self.h.redeem(self.client, body["refresh_token"], self.verifier)
        self.assertError(result, 400, "invalid_grant")

    def test_code_replay_revokes_the_family(self) -> None:
        code = self.code()
        first = self.h.redeem(self.client, code, self.verifier)
        self.assertEqual(first.code, 200)
        tokens = first.json()
        claims = claims_of(self.h, tokens["access_token"])
        replay = self.h.redeem(self.client, code, self.verifier)
        self.assertError(replay, 400, "invalid_grant")
        # the access token issued from the code is deny-listed, the refresh token is dead
        self.assertTrue(
            self.successResultOf(self.h.storage.revocations.is_jti_revoked(claims["jti"]))
        )
        self.assertError(self.h.refresh(self.client, tokens["refresh_token"]), 400, "invalid_grant")
        self.assertIn(claims["tsid"], self.h.provider.ended_sessions)

    def test_failed_redemption_burns_the_code(self) -> None:
        code = self.code()
        other, _ = s256_pair()
        self.assertError(self.h.redeem(self.client, code, other), 400, "invalid_grant")
        self.assertError(self.h.redeem(self.client, code, self.verifier), 400, "invalid_grant")

    def test_short_access_lifespan(self) -> None:
        h = AuthServerHarness({"auth_server": {"access_token_lifespan": "1m"}})
        body = h.tokens()
        self.assertEqual(body["expires_in"], 60)
        claims = claims_of(h, body["access_token"])
        self.assertEqual(claims["exp"] - claims["iat"], 60)

    def test_resource_parameter(self) -> None:
        ok = self.h.redeem(self.client, self.code(), self.verifier, resource=AUDIENCE)
        self.assertEqual(ok.code, 200)
        result = self.h.redeem(
            self.client, self.code(), self.verifier, resource="https://elsewhere.example/mcp"
        )
        self.assertError(result, 400, "invalid_target")

    def test_repeated_resource(self) -> None:
        form = {
            "grant_type": "authorization_code",
            "code": self.code(),
            "redirect_uri": self.client["redirect_uris"][0],
            "client_id": self.client["client_id"],
            "code_verifier": self.verifier,
        }
        from urllib.parse import urlencode

        body = urlencode(form) + "&resource=a&resource=b"
        result = self.h.request(
            "POST",
            "/oauth/token",
            data=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertError(result, 400, "invalid_target")

    def test_form_only(self) -> None:
        result = self.h.request(
            "POST", "/oauth/token", json_body={"grant_type": "authorization_code"}
        )
        self.assertError(result, 400, "invalid_request")
        result = self.h.request(
            "POST",
            "/oauth/token?client_id=x",
            data={"grant_type": "authorization_code", "client_id": self.client["client_id"]},
        )
        self.assertError(result, 400, "invalid_request")
        self.assertEqual(self.h.get("/oauth/token").code, 405)

    def test_grant_type_checks(self) -> None:
        base = {"client_id": self.client["client_id"]}
        self.assertError(self.h.post_form("/oauth/token", base), 400, "invalid_request")
        self.assertError(
            self.h.post_form("/oauth/token", {**base, "grant_type": "password"}),
            400,
            "unsupported_grant_type",
        )
        self.assertError(
            self.h.post_form(
                "/oauth/token", {**base, "grant_type": "authorization_code", "code": ""}
            ),
            400,
            "invalid_request",
        )
        client = self.h.register(grant_types=["authorization_code"])
        self.assertError(
            self.h.refresh(client, "rt_x.y"),
            400,
            "unauthorized_client",
        )

    def test_cors(self) -> None:
        result = self.h.request("OPTIONS", "/oauth/token")
        self.assertEqual(result.code, 204)
        self.assertEqual(result.header("access-control-allow-origin"), "*")
        result = self.h.redeem(self.client, self.code(), self.verifier)
        self.assertEqual(result.header("access-control-allow-origin"), "*")


class SeveralAudiencesTests(Base):
    config = {
        "auth_server": {
            "allowed_audiences": ["http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/other"]
        }
    }

    def test_resource_required(self) -> None:
        code = self.code()
        self.assertError(self.h.redeem(self.client, code, self.verifier), 400, "invalid_target")

    def test_resource_at_token_endpoint(self) -> None:
        body = self.h.redeem(
            self.client, self.code(), self.verifier, resource="http://127.0.0.1:8080/other"
        ).json()
        self.assertEqual(
            claims_of(self.h, body["access_token"])["aud"], "http://127.0.0.1:8080/other"
        )

    def test_resource_bound_at_authorize(self) -> None:
        code = self.code(resource="http://127.0.0.1:8080/other")
        result = self.h.redeem(self.client, code, self.verifier, resource=AUDIENCE)
        self.assertError(result, 400, "invalid_target")
        body = self.h.tokens(self.client, resource="http://127.0.0.1:8080/other")
        self.assertEqual(
            claims_of(self.h, body["access_token"])["aud"], "http://127.0.0.1:8080/other"
        )
        refreshed = self.h.refresh(self.client, body["refresh_token"]).json()
        self.assertEqual(
            claims_of(self.h, refreshed["access_token"])["aud"], "http://127.0.0.1:8080/other"
        )


class RefreshTokenGrantTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.first = self.h.tokens(self.client, scope="openid email")

    def test_rotation(self) -> None:
        self.h.clock.advance(60)
        result = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertEqual(result.code, 200, result.body)
        self.assertEqual(result.header("cache-control"), "no-store")
        second = result.json()
        self.assertNotEqual(second["refresh_token"], self.first["refresh_token"])
        self.assertNotEqual(second["access_token"], self.first["access_token"])
        self.assertEqual(second["scope"], "openid email")
        old, new = (
            claims_of(self.h, self.first["access_token"]),
            claims_of(self.h, second["access_token"]),
        )
        self.assertEqual(new["iat"], old["iat"] + 60)
        self.assertEqual(new["exp"], new["iat"] + 900)
        for claim in ("sub", "tsid", "client_id", "aud", "name", "email"):
            self.assertEqual(new[claim], old[claim], claim)
        # the successor rotates too
        third = self.h.refresh(self.client, second["refresh_token"])
        self.assertEqual(third.code, 200)

    def test_retry_within_grace_returns_the_same_successor(self) -> None:
        second = self.h.refresh(self.client, self.first["refresh_token"]).json()
        self.h.clock.advance(29)
        retry = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertEqual(retry.code, 200)
        self.assertEqual(retry.header("cache-control"), "no-store")
        self.assertEqual(retry.json(), second)
        # and the successor still works
        self.assertEqual(self.h.refresh(self.client, second["refresh_token"]).code, 200)

    def test_successor_is_not_stored_in_the_clear(self) -> None:
        second = self.h.refresh(self.client, self.first["refresh_token"]).json()
        token_id = self.h.opaque.verify(self.first["refresh_token"], REFRESH_TOKEN)
        assert token_id is not None
        record = self.successResultOf(self.h.storage.families.get_refresh_token(token_id))
        assert record is not None
        stored = json.dumps(record.successor_response)
        self.assertNotIn(second["refresh_token"], stored)
        self.assertNotIn(second["access_token"], stored)

    def test_reuse_after_grace_revokes_the_family(self) -> None:
        second = self.h.refresh(self.client, self.first["refresh_token"]).json()
        third = self.h.refresh(self.client, second["refresh_token"]).json()
        self.h.clock.advance(31)
        reuse = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertError(reuse, 400, "invalid_grant")
        # every token of the family is dead now
        self.assertError(self.h.refresh(self.client, third["refresh_token"]), 400, "invalid_grant")
        for body in (self.first, second, third):
            jti = claims_of(self.h, body["access_token"])["jti"]
            self.assertTrue(self.successResultOf(self.h.storage.revocations.is_jti_revoked(jti)))
        tsid = claims_of(self.h, self.first["access_token"])["tsid"]
        self.assertIn(tsid, self.h.provider.ended_sessions)

    def test_configurable_grace(self) -> None:
        h = AuthServerHarness({"auth_server": {"refresh_reuse_grace": "5s"}})
        client = h.register()
        first = h.tokens(client)
        h.refresh(client, first["refresh_token"])
        h.clock.advance(6)
        self.assertError(h.refresh(client, first["refresh_token"]), 400, "invalid_grant")

    def test_narrower_scope(self) -> None:
        narrowed = self.h.refresh(self.client, self.first["refresh_token"], scope="openid")
        self.assertEqual(narrowed.code, 200)
        body = narrowed.json()
        self.assertEqual(body["scope"], "openid")
        self.assertEqual(claims_of(self.h, body["access_token"])["scp"], ["openid"])
        # the new refresh token keeps the original grant (RFC 6749 §6)
        again = self.h.refresh(self.client, body["refresh_token"]).json()
        self.assertEqual(again["scope"], "openid email")

    def test_scope_elevation_refused(self) -> None:
        result = self.h.refresh(
            self.client, self.first["refresh_token"], scope="openid offline_access"
        )
        self.assertError(result, 400, "invalid_scope")
        # a refused request does not consume the token
        self.assertEqual(self.h.refresh(self.client, self.first["refresh_token"]).code, 200)

    def test_wrong_client(self) -> None:
        other = self.h.register()
        self.assertError(self.h.refresh(other, self.first["refresh_token"]), 400, "invalid_grant")
        unknown = {**self.client, "client_id": "nobody"}
        self.assertError(
            self.h.refresh(unknown, self.first["refresh_token"]), 401, "invalid_client"
        )

    def test_invalid_refresh_tokens(self) -> None:
        token = self.first["refresh_token"]
        for bad in (token[:-1] + ("A" if token[-1] != "A" else "B"), "garbage", "rt_"):
            self.assertError(self.h.refresh(self.client, bad), 400, "invalid_grant")
        self.assertError(self.h.refresh(self.client, ""), 400, "invalid_request")

    def test_family_lifetime_is_absolute(self) -> None:
        # rotation hands out new values, not more time: 7 days from the login
        self.h.clock.advance(7 * 86400 - 10)
        result = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertEqual(result.code, 200)
        self.h.clock.advance(11)
        self.assertError(
            self.h.refresh(self.client, result.json()["refresh_token"]), 400, "invalid_grant"
        )

    def test_lost_rotation_race_answers_like_a_retry(self) -> None:
        storage = self.h.storage
        real_mark_rotated = storage.families.mark_rotated
        winner: dict[str, Any] = {}

        def concurrent_winner(token_id: str, rotated_at: float, response: Any) -> Any:
            # another request rotated the token just before this one
            storage.families.mark_rotated = real_mark_rotated  # type: ignore[method-assign]
            winner.update(self.h.refresh(self.client, self.first["refresh_token"]).json())
            return real_mark_rotated(token_id, rotated_at, response)

        storage.families.mark_rotated = concurrent_winner  # type: ignore[method-assign,assignment]
        result = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertEqual(result.code, 200)
        self.assertEqual(result.json(), winner)

    def test_a_use_not_recorded_does_not_fail_the_grant(self) -> None:
        """The touch goes after the answer: a rotation that happened is answered even when
        recording the client's use fails (Redis gone at that moment, say)."""
        from twisted.internet.defer import fail
        from twisted.logger import globalLogPublisher

        from authproxy.storage.unavailable import StorageUnavailable

        storage = self.h.storage
        storage.clients.touch_client = lambda client_id: fail(  # type: ignore[method-assign]
            StorageUnavailable("Redis is unreachable")
        )
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        result = self.h.refresh(self.client, self.first["refresh_token"])
        self.assertEqual(result.code, 200, result.body)
        self.assertIn("refresh_token", result.json())
        warnings = [e for e in logged if e.get("log_format", "").startswith("Could not record")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["error"], "Redis is unreachable")

    def test_resource_on_refresh(self) -> None:
        ok = self.h.refresh(self.client, self.first["refresh_token"], resource=AUDIENCE)
        self.assertEqual(ok.code, 200)
        bad = self.h.refresh(self.client, ok.json()["refresh_token"], resource="https://x.example")
        self.assertError(bad, 400, "invalid_target")

    def test_hmac_rotation_keeps_refresh_tokens(self) -> None:
        from authproxy.keys.ring import KeySet

        ring = self.h.ring
        ring.replace(
            KeySet(signing_keys=ring.signing_keys, hmac_secrets=(b"n" * 32,) + ring.hmac_secrets)
        )
        self.assertEqual(self.h.refresh(self.client, self.first["refresh_token"]).code, 200)
