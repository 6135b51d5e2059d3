"""One token, one spelling: non-canonical base64url forms of a valid token are refused.

base64 decoders ignore the unused low bits of a segment's last character and tolerate
``=`` padding, so one token has several spellings. The guard used to accept them all while
``/oauth/revoke`` ignored some; now every place that reads authproxy's tokens accepts only
the canonical form (unpadded, alphabet only, unused bits zero).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.backend import ProxyHarness
from authproxy.testing.upstream import AuthServerHarness
from authproxy.tokens import REFRESH_TOKEN, b64url, b64url_decode

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def flip_trailing_bit(segment: str) -> str:
    """The same bytes, spelt with the lowest unused bit of the last character set."""
    assert len(segment) % 4 in (2, 3), "this segment has no unused bits"
    last = _ALPHABET.index(segment[-1])
    return segment[:-1] + _ALPHABET[last ^ 1]


def variants(token: str) -> dict[str, str]:
    """Non-canonical spellings of a compact JWS that decode to the same bytes."""
    header, payload, signature = token.split(".")
    found = {
        "signature trailing bit": f"{header}.{payload}.{flip_trailing_bit(signature)}",
        "signature padding": f"{token}=",
        "payload padding": f"{header}.{payload}=.{signature}",
        "header padding": f"{header}=.{payload}.{signature}",
    }
    if len(payload) % 4 in (2, 3):
        found["payload trailing bit"] = f"{header}.{flip_trailing_bit(payload)}.{signature}"
    for name, variant in found.items():
        assert variant != token, name
    return found


class CanonicalDecoderTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        for n in range(0, 40):
            data = bytes(range(n))
            self.assertEqual(b64url_decode(b64url(data)), data)

    def test_non_canonical_refused(self) -> None:
        canonical = b64url(b"\xff\xfe")  # "__4": two unused bits
        for text in (
            canonical + "=",
            canonical + "==",
            flip_trailing_bit(canonical),
            "A",  # a lone character is never a whole byte
            "ab+/",
            "ab cd",
            "abc\n",
            "\u0661\u0662",  # non-ASCII digits
        ):
            self.assertRaises(ValueError, b64url_decode, text)


class GuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ProxyHarness()
        # Pad the claims until the payload segment has unused bits, so it too can be flipped.
        extra = ""
        token = self.h.token()
        while len(token.split(".")[1]) % 4 not in (2, 3):
            extra += "x"
            token = self.h.token(name=extra)
        self.token = token

    def status(self, token: str) -> tuple[int, str]:
        d = self.h.client.post(
            self.h.resource, data=b"{}", headers={"Authorization": f"Bearer {token}"}
        )
        self.h.flush()
        response = self.successResultOf(d)
        self.h.flush()
        challenge = (response.headers.getRawHeaders("www-authenticate") or [""])[0]
        return response.code, challenge

    def test_canonical_token_passes(self) -> None:
        self.assertEqual(self.status(self.token)[0], 200)

    def test_non_canonical_spellings_refused(self) -> None:
        found = variants(self.token)
        self.assertIn("payload trailing bit", found)
        for name, variant in found.items():
            code, challenge = self.status(variant)
            self.assertEqual(code, 401, name)
            self.assertIn('error="invalid_token"', challenge, name)


class RevocationTests(SynchronousTestCase):
    """Revoke agrees with the guard: a spelling the guard refuses is no token to revoke."""

    def setUp(self) -> None:
        self.h = AuthServerHarness()
        self.client = self.h.register()
        self.tokens = self.h.tokens(self.client)

    def revoke(self, token: str) -> int:
        result = self.h.post_form(
            "/oauth/revoke", {"token": token, "client_id": self.client["client_id"]}
        )
        return result.code

    def jti_revoked(self) -> bool:
        claims = self.h_claims(self.tokens["access_token"])
        return bool(self.successResultOf(self.h.storage.revocations.is_jti_revoked(claims["jti"])))

    def h_claims(self, token: str) -> dict[str, Any]:
        from authproxy.tokens import AccessTokenVerifier

        claims = AccessTokenVerifier(self.h.ring, self.h.issuer).claims(token)
        assert claims is not None
        return claims

    def test_access_token_variants_revoke_nothing(self) -> None:
        for name, variant in variants(self.tokens["access_token"]).items():
            self.assertEqual(self.revoke(variant), 200, name)  # RFC 7009 §2.2
            self.assertFalse(self.jti_revoked(), name)
        self.assertEqual(self.revoke(self.tokens["access_token"]), 200)
        self.assertTrue(self.jti_revoked())

    def test_refresh_token_variants_refused(self) -> None:
        refresh = self.tokens["refresh_token"]
        random_part, mac = refresh[len(REFRESH_TOKEN) + 1 :].split(".")
        for variant in (
            f"{REFRESH_TOKEN}_{random_part}.{flip_trailing_bit(mac)}",
            f"{REFRESH_TOKEN}_{random_part}=.{mac}",
            f"{refresh}=",
        ):
            self.assertIsNone(self.h.opaque.verify(variant, REFRESH_TOKEN), variant)
            refused = self.h.refresh(self.client, variant)
            self.assertEqual((refused.code, refused.json()["error"]), (400, "invalid_grant"))
        self.assertEqual(self.h.refresh(self.client, refresh).code, 200)
