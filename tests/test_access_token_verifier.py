"""One access-token verifier and one algorithm table: the guard and revocation agree."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys import algorithms
from authproxy.keys.ring import SigningKey
from authproxy.proxy.guard import BearerError, BearerGuard
from authproxy.testing.backend import mint_token
from authproxy.testing.upstream import AuthServerHarness
from authproxy.tokens import AccessTokenVerifier, InvalidAccessToken
from tests.test_authserver_token import claims_of


class SharedVerifierTests(SynchronousTestCase):
    """A token is revocable as an access token exactly when the guard's signature check passes."""

    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register()
        self.claims = claims_of(self.h, self.h.tokens(self.client)["access_token"])
        self.guard = BearerGuard(
            ring=self.h.ring,
            revocations=self.h.storage.revocations,
            clock=self.h.clock,
            issuer=self.h.issuer,
            audiences=[self.claims["aud"]],
        )
        self.verifier = AccessTokenVerifier(self.h.ring, self.h.issuer)

    def token(self, jti: str, **header: Any) -> str:
        claims = {**self.claims, "jti": jti}
        return mint_token(self.h.ring.active_signing_key, claims, header=header)

    def guard_accepts(self, token: str) -> bool:
        d = ensureDeferred(self.guard.verify(token))
        if self.successResultOf(d.addErrback(lambda f: f.trap(BearerError) and None)) is None:
            return False
        return True

    def revoked(self, token: str, jti: str) -> bool:
        form = {"token": token, "client_id": self.client["client_id"]}
        self.assertEqual(self.h.post_form("/oauth/revoke", form).code, 200)
        return bool(self.successResultOf(self.h.storage.revocations.is_jti_revoked(jti)))

    def test_typ_rule_is_the_same_for_both(self) -> None:
        cases = [
            ("at+jwt", True),
            ("application/at+jwt", True),
            ("AT+JWT", True),
            ("JWT", False),
            ("jwt", False),
            (None, False),
        ]
        for i, (typ, usable) in enumerate(cases):
            jti = f"jti-{i}"
            token = self.token(jti, typ=typ)
            self.assertEqual(self.verifier.claims(token) is not None, usable, typ)
            self.assertEqual(self.guard_accepts(token), usable, typ)
            self.assertEqual(self.revoked(token, jti), usable, typ)

    def test_refusal_reason_is_the_guards_description(self) -> None:
        exc = self.assertRaises(
            InvalidAccessToken, self.verifier.verify, self.token("x", typ="JWT")
        )
        self.assertEqual(str(exc), "the token is not an access token (typ must be at+jwt)")

    def test_other_issuer_is_refused(self) -> None:
        other = AccessTokenVerifier(self.h.ring, "https://other.example.com")
        self.assertIsNone(other.claims(self.token("y")))


class AlgorithmTableTests(SynchronousTestCase):
    """Every key type authproxy signs with maps to an alg the shared table accepts."""

    def test_signing_alg_per_key_type(self) -> None:
        keys = [
            (rsa.generate_private_key(65537, 2048), "RS256"),
            (ec.generate_private_key(ec.SECP256R1()), "ES256"),
            (ec.generate_private_key(ec.SECP384R1()), "ES384"),
            (ec.generate_private_key(ec.SECP521R1()), "ES512"),
            (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        ]
        for private, alg in keys:
            self.assertEqual(algorithms.signing_alg(private), alg)
            self.assertIn(alg, algorithms.ASYMMETRIC_ALGS)
            key = SigningKey.from_private_key(private, source="test")
            self.assertEqual(key.alg, alg)
            self.assertTrue(algorithms.key_accepts(key.jwk, alg))
        self.assertRaises(
            ValueError, algorithms.signing_alg, ec.generate_private_key(ec.SECP256K1())
        )

    def test_no_symmetric_or_none(self) -> None:
        for alg in ("none", "HS256", "HS384", "HS512"):
            self.assertNotIn(alg, algorithms.ASYMMETRIC_ALGS)
