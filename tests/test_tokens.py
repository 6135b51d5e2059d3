"""Tests for authproxy.tokens: PKCE, opaque codes and refresh tokens, JWT access tokens."""

from __future__ import annotations

import json
from typing import Any

from jwcrypto.jwk import JWKSet
from jwcrypto.jwt import JWT
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys.ring import KeyRing, KeySet, generate_ephemeral_key
from authproxy.tokens import (
    AUTHORIZATION_CODE,
    REFRESH_TOKEN,
    AccessTokenIssuer,
    AccessTokenVerifier,
    IssuedAccessToken,
    OpaqueTokens,
    b64url_decode,
    is_valid_s256_challenge,
    is_valid_verifier,
    s256_challenge,
    verify_pkce,
)

SECRET_A = b"a" * 32
SECRET_B = b"b" * 32


def make_ring(*secrets: bytes) -> KeyRing:
    return KeyRing(
        KeySet(signing_keys=(generate_ephemeral_key(),), hmac_secrets=secrets or (SECRET_A,))
    )


class PKCETests(SynchronousTestCase):
    # RFC 7636 Appendix B
    VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

    def test_appendix_b_vector(self) -> None:
        self.assertEqual(s256_challenge(self.VERIFIER), self.CHALLENGE)
        self.assertTrue(verify_pkce(self.VERIFIER, self.CHALLENGE))

    def test_wrong_verifier(self) -> None:
        self.assertFalse(verify_pkce(self.VERIFIER[:-1] + "A", self.CHALLENGE))

    def test_verifier_syntax(self) -> None:
        self.assertTrue(is_valid_verifier("a" * 43))
        self.assertTrue(is_valid_verifier("A-._~" * 20 + "abc"))
        self.assertFalse(is_valid_verifier("a" * 42))
        self.assertFalse(is_valid_verifier("a" * 129))
        self.assertFalse(is_valid_verifier("a" * 42 + "+"))
        # A verifier outside the grammar never matches, even if its hash would.
        bad = "a" * 42 + "!"
        self.assertFalse(verify_pkce(bad, s256_challenge(bad)))

    def test_challenge_syntax(self) -> None:
        self.assertTrue(is_valid_s256_challenge(self.CHALLENGE))
        self.assertFalse(is_valid_s256_challenge(self.CHALLENGE + "A"))
        self.assertFalse(is_valid_s256_challenge("plain-challenge"))
        self.assertFalse(is_valid_s256_challenge(self.CHALLENGE[:-1] + "="))


class OpaqueTokensTests(SynchronousTestCase):
    def test_mint_and_verify(self) -> None:
        tokens = OpaqueTokens(make_ring())
        token, token_id = tokens.mint(REFRESH_TOKEN)
        self.assertTrue(token.startswith("rt_"))
        random_part, mac = token[3:].split(".")
        self.assertEqual(len(b64url_decode(random_part)), 32)
        self.assertEqual(len(b64url_decode(mac)), 32)
        self.assertEqual(tokens.verify(token, REFRESH_TOKEN), token_id)
        # the id is a digest, not the token
        self.assertNotIn(random_part, token_id)
        self.assertEqual(len(token_id), 64)

    def test_values_are_unique(self) -> None:
        tokens = OpaqueTokens(make_ring())
        minted = {tokens.mint(AUTHORIZATION_CODE) for _ in range(50)}
        self.assertEqual(len({token for token, _ in minted}), 50)
        self.assertEqual(len({token_id for _, token_id in minted}), 50)

    def test_code_is_not_a_refresh_token(self) -> None:
        tokens = OpaqueTokens(make_ring())
        code, _ = tokens.mint(AUTHORIZATION_CODE)
        self.assertIsNone(tokens.verify(code, REFRESH_TOKEN))
        # relabelling the prefix does not help: the tag is inside the MAC
        self.assertIsNone(tokens.verify("rt_" + code[3:], REFRESH_TOKEN))

    def test_tampering_refused(self) -> None:
        tokens = OpaqueTokens(make_ring())
        token, _ = tokens.mint(REFRESH_TOKEN)
        random_part, mac = token[3:].split(".")
        flipped = ("B" if random_part[0] == "A" else "A") + random_part[1:]
        for bad in (
            f"rt_{flipped}.{mac}",
            f"rt_{random_part}.{mac[:-2]}",
            f"rt_{random_part}",
            f"rt_{random_part}.",
            "rt_",
            "",
            f"rt_{random_part}.{mac}!",
            token + "x" * 300,
        ):
            self.assertIsNone(tokens.verify(bad, REFRESH_TOKEN), bad)

    def test_unknown_kind(self) -> None:
        self.assertRaises(ValueError, OpaqueTokens(make_ring()).mint, "xx")

    def test_other_server_secret_refused(self) -> None:
        token, _ = OpaqueTokens(make_ring(SECRET_B)).mint(REFRESH_TOKEN)
        self.assertIsNone(OpaqueTokens(make_ring(SECRET_A)).verify(token, REFRESH_TOKEN))

    def test_hmac_rotation_keeps_outstanding_tokens(self) -> None:
        ring = make_ring(SECRET_A)
        tokens = OpaqueTokens(ring)
        old, old_id = tokens.mint(REFRESH_TOKEN)
        ring.replace(KeySet(signing_keys=ring.signing_keys, hmac_secrets=(SECRET_B, SECRET_A)))
        self.assertEqual(tokens.verify(old, REFRESH_TOKEN), old_id)
        new, new_id = tokens.mint(REFRESH_TOKEN)
        self.assertEqual(tokens.verify(new, REFRESH_TOKEN), new_id)
        self.assertIsNone(OpaqueTokens(make_ring(SECRET_A)).verify(new, REFRESH_TOKEN))
        # once the old secret is gone, tokens it protected are refused
        ring.replace(KeySet(signing_keys=ring.signing_keys, hmac_secrets=(SECRET_B,)))
        self.assertIsNone(tokens.verify(old, REFRESH_TOKEN))
        self.assertEqual(tokens.verify(new, REFRESH_TOKEN), new_id)

    def test_seal_opens_only_with_the_token(self) -> None:
        tokens = OpaqueTokens(make_ring())
        token, _ = tokens.mint(REFRESH_TOKEN)
        other, _ = tokens.mint(REFRESH_TOKEN)
        payload = {"access_token": "x", "expires_in": 60}
        sealed = tokens.seal(token, REFRESH_TOKEN, payload)
        self.assertNotIn("access_token", json.dumps(sealed))
        self.assertEqual(tokens.unseal(token, REFRESH_TOKEN, sealed), payload)
        self.assertIsNone(tokens.unseal(other, REFRESH_TOKEN, sealed))
        self.assertIsNone(tokens.unseal(token, REFRESH_TOKEN, {**sealed, "ciphertext": "AAAA"}))
        self.assertIsNone(tokens.unseal(token, REFRESH_TOKEN, {"alg": "none"}))


class AccessTokenIssuerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000.5)
        self.ring = make_ring()
        self.issuer = AccessTokenIssuer(self.ring, self.clock, "https://auth.example.com")

    def issue(self, **kw: Any) -> IssuedAccessToken:
        args: dict[str, Any] = dict(
            subject="user-1",
            audience="https://mcp.example.com/mcp",
            client_id="client-1",
            scopes=("openid", "email"),
            tsid="tsid-1",
            lifespan=900,
        )
        args.update(kw)
        return self.issuer.issue(**args)

    def test_header_and_claims(self) -> None:
        issued = self.issue(name="Alice", email="alice@example.com")
        jwt = JWT(jwt=issued.token, key=self.ring.active_signing_key.jwk, check_claims=False)
        header = json.loads(jwt.header)
        self.assertEqual(
            header,
            {"alg": "ES256", "kid": self.ring.active_signing_key.kid, "typ": "at+jwt"},
        )
        claims = json.loads(jwt.claims)
        self.assertEqual(
            claims,
            {
                "iss": "https://auth.example.com",
                "sub": "user-1",
                "aud": "https://mcp.example.com/mcp",
                "exp": 1_700_000_900,
                "iat": 1_700_000_000,
                "jti": issued.jti,
                "client_id": "client-1",
                "scope": "openid email",
                "scp": ["openid", "email"],
                "tsid": "tsid-1",
                "name": "Alice",
                "email": "alice@example.com",
            },
        )
        self.assertEqual(claims["exp"] - claims["iat"], 900)

    def test_optional_claims_absent(self) -> None:
        issued = self.issue()
        self.assertNotIn("name", issued.claims)
        self.assertNotIn("email", issued.claims)

    def test_unique_jti(self) -> None:
        self.assertNotEqual(self.issue().jti, self.issue().jti)

    def test_verifies_against_jwks(self) -> None:
        issued = self.issue()
        keyset = JWKSet.from_json(json.dumps(self.ring.jwks()))
        jwt = JWT(jwt=issued.token, key=keyset, check_claims=False)
        self.assertEqual(json.loads(jwt.claims)["sub"], "user-1")

    def verified_claims(self, token: str) -> dict[str, Any] | None:
        return AccessTokenVerifier(self.ring, "https://auth.example.com").claims(token)

    def test_verified_claims(self) -> None:
        issued = self.issue()
        token = issued.token
        claims = self.verified_claims(token)
        assert claims is not None
        self.assertEqual(claims["jti"], issued.jti)
        # after the lifetime the claims are still readable (revocation needs them)
        self.clock.advance(10_000)
        self.assertIsNotNone(self.verified_claims(token))
        other = AccessTokenVerifier(make_ring(), "https://auth.example.com")
        self.assertIsNone(other.claims(token))
        wrong_iss = AccessTokenVerifier(self.ring, "https://other.example.com")
        self.assertIsNone(wrong_iss.claims(token))
        head, payload, sig = token.split(".")
        self.assertIsNone(self.verified_claims(f"{head}.{payload}x.{sig}"))
        self.assertIsNone(self.verified_claims("not.a.jwt"))
        self.assertIsNone(self.verified_claims("rt_abc.def"))

    def test_rotated_key_signs_new_tokens(self) -> None:
        old_key = self.ring.active_signing_key
        old = self.issue()
        new_key = generate_ephemeral_key()
        self.ring.replace(
            KeySet(signing_keys=(new_key, old_key), hmac_secrets=self.ring.hmac_secrets)
        )
        new = self.issue()
        self.assertEqual(
            json.loads(JWT(jwt=new.token, key=new_key.jwk, check_claims=False).header)["kid"],
            new_key.kid,
        )
        self.assertIsNotNone(self.verified_claims(old.token))


class SigningAlgorithmTests(SynchronousTestCase):
    """Tokens signed with every key type authproxy accepts verify with jwcrypto."""

    def test_every_key_type(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import ec as ec_keys
        from cryptography.hazmat.primitives.asymmetric import ed25519 as ed_keys
        from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
        from jwcrypto.jws import JWS as Verifier

        from authproxy.keys.ring import SigningKey
        from authproxy.keys.signing import sign_compact

        privates = {
            "RS256": rsa_keys.generate_private_key(public_exponent=65537, key_size=2048),
            "ES256": ec_keys.generate_private_key(ec_keys.SECP256R1()),
            "ES384": ec_keys.generate_private_key(ec_keys.SECP384R1()),
            "ES512": ec_keys.generate_private_key(ec_keys.SECP521R1()),
            "EdDSA": ed_keys.Ed25519PrivateKey.generate(),
        }
        for alg, private in privates.items():
            key = SigningKey.from_private_key(private, "test")
            self.assertEqual(key.alg, alg)
            header = json.dumps({"alg": alg, "kid": key.kid, "typ": "at+jwt"}).encode()
            token = sign_compact(key, header, b'{"sub":"alice"}')
            verifier = Verifier()
            verifier.deserialize(token)
            verifier.verify(key.jwk, alg=alg)
            self.assertEqual(verifier.payload, b'{"sub":"alice"}', alg)
