"""The bearer guard: every refusal case, the verified-token cache, revocation, key reloads."""

from __future__ import annotations

import json
from typing import Any

from jwcrypto.common import base64url_encode
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys.ring import KeySet, generate_ephemeral_key
from authproxy.proxy.guard import BearerGuard
from authproxy.testing.backend import ProxyHarness, make_test_ring, mint_token, proxy_config

MCP = "https://mcp.example.com/mcp"
METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"


class GuardTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ProxyHarness()

    def call(self, headers: dict[str, str] | None = None, url: str = MCP) -> tuple[Any, Any]:
        d = self.h.client.post(url, data=b"{}", headers=headers or {})
        self.h.flush()
        response = self.successResultOf(d)
        body = self.successResultOf(response.content())
        return response, json.loads(body) if body else None

    def assertRefused(
        self, token: str | None, description: str | None = None, status: int = 401
    ) -> str:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response, body = self.call(headers)
        self.assertEqual(response.code, status)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertTrue(challenge.startswith("Bearer "), challenge)
        self.assertIn(f'resource_metadata="{METADATA}"', challenge)
        self.assertIn('realm="https://mcp.example.com"', challenge)
        if token is not None and status == 401:
            self.assertIn('error="invalid_token"', challenge)
            self.assertEqual(body["error"], "invalid_token")
        if description is not None:
            self.assertIn(description, body["error_description"])
        self.assertEqual(self.h.backend.received, [])
        return challenge


class RefusalTests(GuardTestCase):
    def test_no_token(self) -> None:
        challenge = self.assertRefused(None)
        self.assertNotIn("error=", challenge)

    def test_other_scheme(self) -> None:
        response, _ = self.call({"Authorization": "Basic dXNlcjpwYXNz"})
        self.assertEqual(response.code, 401)
        self.assertNotIn("error=", response.headers.getRawHeaders("www-authenticate")[0])

    def test_token_in_query_refused(self) -> None:
        response, body = self.call(url=MCP + "?access_token=" + self.h.token())
        self.assertEqual(response.code, 400)
        self.assertEqual(body["error"], "invalid_request")
        self.assertEqual(self.h.backend.received, [])

    def test_malformed(self) -> None:
        self.assertRefused("not-a-jwt", "not a JWT")
        self.assertRefused("a.b", "not a JWT")
        self.assertRefused("!!!.###.$$$", "not a JWT")

    def test_bad_signature(self) -> None:
        head, payload, _ = self.h.token().split(".")
        other = mint_token(self.h.ring.active_signing_key, self.h.claims(sub="someone-else"))
        self.assertRefused(f"{head}.{payload}.{other.split('.')[2]}", "signature")
        tampered = base64url_encode(json.dumps(self.h.claims(sub="admin")))
        self.assertRefused(f"{head}.{tampered}.{self.h.token().split('.')[2]}", "signature")

    def test_unknown_kid(self) -> None:
        stranger = generate_ephemeral_key()
        self.assertRefused(mint_token(stranger, self.h.claims()), "unknown key")

    def test_alg_none(self) -> None:
        key = self.h.ring.active_signing_key
        header = base64url_encode(json.dumps({"alg": "none", "kid": key.kid, "typ": "at+jwt"}))
        payload = base64url_encode(json.dumps(self.h.claims()))
        self.assertRefused(f"{header}.{payload}.", "not accepted")

    def test_hs256_with_public_key_bytes(self) -> None:
        key = self.h.ring.active_signing_key
        public_pem = key.jwk.export_to_pem()  # public part, PEM bytes
        secret = JWK(kty="oct", k=base64url_encode(public_pem))
        protected = {"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}
        jws = JWS(json.dumps(self.h.claims()).encode())
        jws.add_signature(secret, alg="HS256", protected=json.dumps(protected))
        self.assertRefused(jws.serialize(compact=True), "not accepted")

    def test_alg_must_match_key(self) -> None:
        key = self.h.ring.active_signing_key  # ES256
        header = base64url_encode(json.dumps({"alg": "ES384", "kid": key.kid, "typ": "at+jwt"}))
        token = self.h.token().split(".")
        self.assertRefused(f"{header}.{token[1]}.{token[2]}", "does not match")

    def test_wrong_typ(self) -> None:
        token = mint_token(self.h.ring.active_signing_key, self.h.claims(), header={"typ": "JWT"})
        self.assertRefused(token, "at+jwt")

    def test_expired(self) -> None:
        now = int(self.h.clock.seconds())
        self.assertRefused(self.h.token(exp=now - 61), "expired")

    def test_expiry_leeway(self) -> None:
        now = int(self.h.clock.seconds())
        response, _ = self.call(self.h.auth(self.h.token(exp=now - 30)))
        self.assertEqual(response.code, 200)

    def test_not_yet_valid(self) -> None:
        now = int(self.h.clock.seconds())
        self.assertRefused(self.h.token(nbf=now + 120), "not valid yet")
        response, _ = self.call(self.h.auth(self.h.token(nbf=now + 30)))
        self.assertEqual(response.code, 200)

    def test_wrong_audience(self) -> None:
        self.assertRefused(self.h.token(aud="https://other.example.com/mcp"), "not meant")
        response, _ = self.call(self.h.auth(self.h.token(aud=["x", self.h.resource])))
        self.assertEqual(response.code, 200)

    def test_other_allowed_audience_is_not_this_resource(self) -> None:
        # The authorization server may issue tokens for several audiences; only those for
        # this MCP resource pass this guard.
        config = proxy_config(
            auth_server={"allowed_audiences": ["https://mcp.example.com/mcp", "https://other"]}
        )
        self.h = ProxyHarness(config)
        self.assertRefused(self.h.token(aud="https://other"), "not meant")
        response, _ = self.call(self.h.auth(self.h.token(aud="https://mcp.example.com/mcp")))
        self.assertEqual(response.code, 200)

    def test_wrong_issuer(self) -> None:
        self.assertRefused(self.h.token(iss="https://mcp.example.com/"), "another issuer")

    def test_revoked_jti(self) -> None:
        token = self.h.token(jti="jti-1")
        response, _ = self.call(self.h.auth(token))
        self.assertEqual(response.code, 200)
        self.h.storage.revocations.revoke_jti("jti-1", self.h.clock.seconds() + 900)
        self.h.backend.received.clear()
        self.assertRefused(token, "revoked")

    def test_missing_required_scope(self) -> None:
        h = self.h = ProxyHarness(proxy_config(auth_server={"required_scopes": ["email"]}))
        response, body = self.call(h.auth(h.token()))
        self.assertEqual(response.code, 403)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('error="insufficient_scope"', challenge)
        self.assertIn('scope="email"', challenge)
        self.assertEqual(body["error"], "insufficient_scope")
        self.assertEqual(body["scope"], "email")
        self.assertEqual(h.backend.received, [])
        # The unauthenticated challenge names what to ask for: the required scopes among them.
        response, _ = self.call()
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('scope="openid profile email"', challenge)
        # A token with the scope passes (scp array or scope string).
        response, _ = self.call(h.auth(h.token(scope="openid email", scp=None)))
        self.assertEqual(response.code, 200)

    def test_valid_token_passes(self) -> None:
        response, body = self.call(self.h.auth())
        self.assertEqual(response.code, 200)
        self.assertEqual(body["method"], "POST")


class CacheTests(SynchronousTestCase):
    def guard(self, **kwargs: Any) -> tuple[BearerGuard, ProxyHarness]:
        h = ProxyHarness()
        return h.proxy.guard, h

    def verify(self, guard: BearerGuard, token: str) -> Any:
        from twisted.internet.defer import ensureDeferred

        return ensureDeferred(guard.verify(token))

    def test_signature_checked_once(self) -> None:
        guard, h = self.guard()
        token = h.token()
        calls: list[str] = []
        original = guard._verify_signed

        def counting(token: str, now: float) -> Any:
            calls.append(token)
            return original(token, now)

        guard._verify_signed = counting  # type: ignore[method-assign]
        for _ in range(3):
            self.successResultOf(self.verify(guard, token))
        self.assertEqual(len(calls), 1)
        self.assertEqual(guard.cache_size, 1)

    def test_cached_token_still_expires(self) -> None:
        guard, h = self.guard()
        token = h.token()
        self.successResultOf(self.verify(guard, token))
        h.clock.advance(900 + 61)
        self.failureResultOf(self.verify(guard, token))
        self.assertEqual(guard.cache_size, 0)

    def test_key_ring_reload_drops_cache(self) -> None:
        guard, h = self.guard()
        token = h.token()
        self.successResultOf(self.verify(guard, token))
        # The signing key is removed by a reload: the cached verdict must not survive.
        h.ring.replace(KeySet(signing_keys=(generate_ephemeral_key(),), hmac_secrets=(b"s" * 32,)))
        failure = self.failureResultOf(self.verify(guard, token))
        self.assertIn("unknown key", failure.value.description)

    def test_key_ring_reload_keeping_key_still_verifies(self) -> None:
        guard, h = self.guard()
        old = h.ring.active_signing_key
        token = h.token()
        self.successResultOf(self.verify(guard, token))
        h.ring.replace(
            KeySet(signing_keys=(generate_ephemeral_key(), old), hmac_secrets=(b"s" * 32,))
        )
        self.successResultOf(self.verify(guard, token))

    def test_revocation_honoured_for_cached_token(self) -> None:
        guard, h = self.guard()
        token = h.token(jti="j")
        self.successResultOf(self.verify(guard, token))
        h.storage.revocations.revoke_jti("j", h.clock.seconds() + 900)
        self.failureResultOf(self.verify(guard, token))

    def test_cache_is_bounded(self) -> None:
        h = ProxyHarness()
        guard = BearerGuard(
            ring=h.ring,
            revocations=h.storage.revocations,
            clock=h.clock,
            issuer=h.config.auth_server.issuer,
            audiences=[h.resource],
            cache_size=3,
        )
        for _ in range(5):
            self.successResultOf(self.verify(guard, h.token()))
        self.assertEqual(guard.cache_size, 3)

    def test_other_ring_tokens_rejected(self) -> None:
        guard, h = self.guard()
        other = make_test_ring()
        failure = self.failureResultOf(
            self.verify(guard, mint_token(other.active_signing_key, h.claims()))
        )
        self.assertEqual(failure.value.status, 401)
