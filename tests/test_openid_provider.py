"""authproxy as an OpenID provider: ID tokens, userinfo and the discovery document."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from jwcrypto.jwk import JWKSet
from jwcrypto.jwt import JWT
from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.id_token import at_hash
from authproxy.testing.upstream import AuthServerHarness, HTTPResult, s256_pair
from authproxy.tokens import AccessTokenIssuer

ISSUER = "http://127.0.0.1:8080"


def id_token_claims(h: AuthServerHarness, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of ``token``, its signature verified with the published JWKS."""
    jwks = JWKSet.from_json(h.get("/.well-known/jwks.json").body)
    jwt = JWT(jwt=token, key=jwks, check_claims=False)
    return json.loads(jwt.header), json.loads(jwt.claims)


class Base(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register(scope="openid profile email offline_access")

    def code_flow(self, **params: str) -> dict[str, Any]:
        """Log in with ``params`` and redeem the code: the token response."""
        verifier, challenge = s256_pair()
        callback = self.h.login(self.client, challenge, **params)
        self.login_time = self.h.clock.seconds()
        result = self.h.redeem(self.client, callback["code"], verifier)
        self.assertEqual(result.code, 200, result.body)
        body: dict[str, Any] = result.json()
        return body

    def userinfo(self, token: str | None, method: str = "GET") -> HTTPResult:
        headers = {} if token is None else {"Authorization": "Bearer " + token}
        return self.h.request(method, "/oauth/userinfo", headers=headers)


class IdTokenTests(Base):
    def test_claims_of_the_code_grant(self) -> None:
        self.h.clock.advance(5)
        body = self.code_flow(scope="openid", nonce="n-0S6_WzA2Mj")
        header, claims = id_token_claims(self.h, body["id_token"])
        key = self.h.ring.active_signing_key
        self.assertEqual((header["alg"], header["kid"]), (key.alg, key.kid))
        access = json.loads(JWT(jwt=body["access_token"], key=key.jwk, check_claims=False).claims)
        self.assertEqual(claims["iss"], ISSUER)
        self.assertEqual(claims["sub"], access["sub"])
        self.assertEqual(claims["aud"], self.client["client_id"])
        self.assertEqual(claims["iat"], int(self.h.clock.seconds()))
        self.assertEqual(claims["exp"], claims["iat"] + 900)
        self.assertEqual(claims["auth_time"], int(self.login_time))
        self.assertEqual(claims["nonce"], "n-0S6_WzA2Mj")
        self.assertTrue(claims["sid"])
        self.assertNotIn(claims["sid"], json.dumps(access))  # nothing it is derived from
        # OIDC Core §3.1.3.6, computed independently for the ES256 key of the ring
        digest = hashlib.sha256(body["access_token"].encode()).digest()
        expected = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
        self.assertEqual(claims["at_hash"], expected)
        # only scope openid: no profile claims
        for claim in ("name", "preferred_username", "email", "email_verified"):
            self.assertNotIn(claim, claims)

    def test_no_nonce_when_none_was_sent(self) -> None:
        _, claims = id_token_claims(self.h, self.code_flow(scope="openid")["id_token"])
        self.assertNotIn("nonce", claims)

    def test_profile_claims_by_scope(self) -> None:
        body = self.code_flow(scope="openid profile")
        _, claims = id_token_claims(self.h, body["id_token"])
        self.assertEqual(claims["name"], "Alice Example")
        self.assertEqual(claims["preferred_username"], "alice")
        self.assertNotIn("email", claims)
        body = self.code_flow(scope="openid email")
        _, claims = id_token_claims(self.h, body["id_token"])
        self.assertEqual((claims["email"], claims["email_verified"]), ("alice@example.com", True))
        self.assertNotIn("name", claims)

    def test_unknown_claims_are_left_out(self) -> None:
        self.h.provider.email_verified = None
        self.h.provider.preferred_username = None
        _, claims = id_token_claims(
            self.h, self.code_flow(scope="openid profile email")["id_token"]
        )
        self.assertNotIn("email_verified", claims)
        self.assertNotIn("preferred_username", claims)
        self.assertEqual(claims["email"], "alice@example.com")

    def test_no_id_token_without_openid(self) -> None:
        body = self.code_flow(scope="email offline_access")
        self.assertNotIn("id_token", body)
        refreshed = self.h.refresh(self.client, body["refresh_token"]).json()
        self.assertNotIn("id_token", refreshed)

    def test_refresh_returns_a_new_id_token_without_nonce(self) -> None:
        body = self.code_flow(scope="openid email offline_access", nonce="abc")
        _, first = id_token_claims(self.h, body["id_token"])
        self.h.clock.advance(600)
        refreshed = self.h.refresh(self.client, body["refresh_token"])
        self.assertEqual(refreshed.code, 200, refreshed.body)
        _, claims = id_token_claims(self.h, refreshed.json()["id_token"])
        self.assertNotIn("nonce", claims)
        for same in ("iss", "sub", "aud", "auth_time", "sid", "email"):
            self.assertEqual(claims[same], first[same], same)
        self.assertEqual(claims["iat"], first["iat"] + 600)
        self.assertEqual(claims["at_hash"], at_hash(refreshed.json()["access_token"], "ES256"))

    def test_refresh_narrowed_without_openid_has_no_id_token(self) -> None:
        body = self.code_flow(scope="openid email offline_access")
        refreshed = self.h.refresh(self.client, body["refresh_token"], scope="email")
        self.assertEqual(refreshed.code, 200, refreshed.body)
        self.assertNotIn("id_token", refreshed.json())

    def test_overlong_nonce_is_refused(self) -> None:
        _, challenge = s256_pair()
        result = self.h.get(self.h.authorize_url(self.client, challenge, nonce="n" * 513))
        self.assertEqual(result.code, 302)
        params = result.location_params()
        self.assertEqual(params["error"], "invalid_request")
        self.assertIn("nonce", params["error_description"])


class AtHashTests(SynchronousTestCase):
    def test_hash_follows_the_algorithm(self) -> None:
        token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"  # OIDC Core A.3's example token
        self.assertEqual(at_hash(token, "RS256"), "77QmUPtjPfzWtF2AnpK9RQ")
        for alg, size in (("ES384", 24), ("ES512", 32), ("EdDSA", 32)):
            self.assertEqual(len(base64.urlsafe_b64decode(at_hash(token, alg) + "==")), size)


class UserinfoTests(Base):
    def test_claims_by_scope(self) -> None:
        cases = {
            "openid": {"sub"},
            "openid profile": {"sub", "name", "preferred_username"},
            "openid email": {"sub", "email", "email_verified"},
            "openid profile email": {
                "sub",
                "name",
                "preferred_username",
                "email",
                "email_verified",
            },
        }
        for scope, expected in cases.items():
            token = self.code_flow(scope=scope)["access_token"]
            for method in ("GET", "POST"):
                result = self.userinfo(token, method)
                self.assertEqual(result.code, 200, result.body)
                self.assertEqual(set(result.json()), expected, scope)
        self.assertEqual(result.json()["email"], "alice@example.com")
        self.assertEqual(result.json()["name"], "Alice Example")
        self.assertEqual(result.header("cache-control"), "no-store")
        self.assertEqual(result.header("content-type"), "application/json")
        self.assertEqual(result.header("access-control-allow-origin"), "*")

    def test_sub_matches_the_id_token(self) -> None:
        body = self.code_flow(scope="openid")
        _, claims = id_token_claims(self.h, body["id_token"])
        self.assertEqual(self.userinfo(body["access_token"]).json()["sub"], claims["sub"])

    def test_without_openid_scope(self) -> None:
        result = self.userinfo(self.code_flow(scope="email")["access_token"])
        self.assertEqual((result.code, result.json()["error"]), (403, "insufficient_scope"))
        challenge = result.header("www-authenticate") or ""
        self.assertTrue(challenge.startswith("Bearer "), challenge)
        self.assertIn('error="insufficient_scope"', challenge)
        self.assertIn('scope="openid"', challenge)

    def test_without_token(self) -> None:
        result = self.userinfo(None)
        self.assertEqual(result.code, 401)
        self.assertEqual(result.header("www-authenticate"), f'Bearer realm="{ISSUER}"')
        self.assertEqual(result.header("cache-control"), "no-store")
        self.assertEqual(result.header("access-control-allow-origin"), "*")  # readable to JS

    def test_bad_tokens(self) -> None:
        good = self.code_flow(scope="openid")["access_token"]
        foreign = AccessTokenIssuer(self.h.ring, self.h.clock, "https://other.example").issue(
            subject="x",
            audience=ISSUER + "/mcp",
            client_id="c",
            scopes=["openid"],
            tsid="t",
            lifespan=900,
        )
        for token in ("garbage", good[:-4] + "AAAA", foreign.token):
            result = self.userinfo(token)
            self.assertEqual((result.code, result.json()["error"]), (401, "invalid_token"), token)
            self.assertIn('error="invalid_token"', result.header("www-authenticate") or "")

    def test_expired_and_revoked_tokens(self) -> None:
        body = self.code_flow(scope="openid offline_access")
        revoked = self.h.post_form(
            "/oauth/revoke", {"token": body["access_token"], "client_id": self.client["client_id"]}
        )
        self.assertEqual(revoked.code, 200)
        self.assertEqual(self.userinfo(body["access_token"]).code, 401)
        token = self.code_flow(scope="openid")["access_token"]
        self.h.clock.advance(900 + 61)
        self.assertEqual(self.userinfo(token).code, 401)

    def test_preflight(self) -> None:
        result = self.h.request("OPTIONS", "/oauth/userinfo")
        self.assertEqual(result.code, 204)
        self.assertEqual(result.header("access-control-allow-origin"), "*")
        self.assertIn("Authorization", result.header("access-control-allow-headers") or "")


class DiscoveryTests(SynchronousTestCase):
    REQUIRED = (  # OIDC Discovery §3
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "response_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
    )

    def test_openid_configuration(self) -> None:
        h = AuthServerHarness()
        document = h.get("/.well-known/openid-configuration").json()
        for field in self.REQUIRED:
            self.assertIn(field, document)
        self.assertEqual(document["userinfo_endpoint"], ISSUER + "/oauth/userinfo")
        self.assertEqual(document["subject_types_supported"], ["public"])
        self.assertEqual(document["id_token_signing_alg_values_supported"], ["ES256"])
        self.assertIn("openid", document["scopes_supported"])
        self.assertEqual(
            set(document["claims_supported"]),
            {
                *("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash"),
                *("name", "preferred_username", "email", "email_verified"),
            },
        )
        self.assertEqual(document["response_types_supported"], ["code"])
        rfc8414 = h.get("/.well-known/oauth-authorization-server").json()
        self.assertEqual(rfc8414["userinfo_endpoint"], document["userinfo_endpoint"])

    def test_claims_follow_the_served_scopes(self) -> None:
        h = AuthServerHarness({"auth_server": {"scopes_supported": ["openid", "email"]}})
        claims = h.get("/.well-known/openid-configuration").json()["claims_supported"]
        self.assertIn("email", claims)
        self.assertNotIn("name", claims)

    def test_not_an_openid_provider_without_the_openid_scope(self) -> None:
        h = AuthServerHarness({"auth_server": {"scopes_supported": ["mcp:tools"]}})
        self.assertEqual(h.get("/.well-known/openid-configuration").code, 404)
        self.assertEqual(h.get("/oauth/userinfo").code, 404)
        document = h.get("/.well-known/oauth-authorization-server").json()
        self.assertNotIn("userinfo_endpoint", document)
        self.assertNotIn("claims_supported", document)
        self.assertEqual(document["scopes_supported"], ["mcp:tools"])
