"""The tokens authproxy hands out: RFC 9068 JWT access tokens and opaque, HMAC-protected values.

Access tokens are JWTs signed by the KeyRing's active key, so the guard (and anyone holding
the JWKS) verifies them without a storage lookup. Authorization codes and refresh tokens are
opaque: 256 random bits plus an HMAC over them by the ring's active secret. Storage keys on
the SHA-256 of the random part, never on the value itself, so a storage dump hands out no
usable token; the HMAC lets the server refuse forged values before touching storage, and is
checked against every secret in the ring so an HMAC rotation keeps outstanding values valid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwcrypto.common import JWException
from jwcrypto.jws import JWS

from authproxy.http.json import loads_untrusted
from authproxy.keys.algorithms import ASYMMETRIC_ALGS
from authproxy.keys.ring import KeyRing
from authproxy.keys.signing import b64url as b64url_bytes
from authproxy.keys.signing import sign_compact

# Type tags of opaque values: part of the value and of the MAC, so a code is never a refresh token.
AUTHORIZATION_CODE = "ac"
REFRESH_TOKEN = "rt"
_KINDS = frozenset({AUTHORIZATION_CODE, REFRESH_TOKEN})

_RANDOM_BYTES = 32
_VERIFIER_RE = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE_RE = re.compile(r"[A-Za-z0-9\-_]{43}")


class Clock(Protocol):
    """The part of IReactorTime that token code needs."""

    def seconds(self) -> float: ...


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 7515 §2)."""
    return b64url_bytes(data).decode("ascii")


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")


def b64url_decode(text: str) -> bytes:
    """Decode canonical unpadded base64url (RFC 7515 §2); ValueError on anything else.

    Canonical: only the alphabet, no ``=`` padding and the unused low bits of the last
    character zero, so that a byte string has exactly one accepted spelling and a token
    cannot be presented in forms that one check accepts and another does not recognise.
    """
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url(data) != text:
        raise ValueError("not canonical base64url (the unused bits are not zero)")
    return data


def split_compact_jws(token: str) -> tuple[bytes, bytes, bytes]:
    """The decoded (header, payload, signature) of a compact JWS in canonical form.

    Raises ValueError unless there are exactly three canonical base64url segments; the
    signature is then checked by jwcrypto on the same, now known canonical, text.
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError("not a compact JWS")
    header, payload, signature = (b64url_decode(part) for part in parts)
    return header, payload, signature


# -- PKCE (RFC 7636) ---------------------------------------------------------------------


def s256_challenge(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` (RFC 7636 §4.2)."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def is_valid_verifier(verifier: str) -> bool:
    """43–128 characters of the unreserved set (RFC 7636 §4.1)."""
    return _VERIFIER_RE.fullmatch(verifier) is not None


def is_valid_s256_challenge(challenge: str) -> bool:
    """An S256 challenge is always 43 base64url characters (a SHA-256 digest)."""
    return _CHALLENGE_RE.fullmatch(challenge) is not None


def verify_pkce(verifier: str, challenge: str) -> bool:
    """True when ``verifier`` is well formed and hashes to ``challenge`` (S256)."""
    if not is_valid_verifier(verifier):
        return False
    return hmac.compare_digest(s256_challenge(verifier), challenge)


# -- opaque codes and refresh tokens ------------------------------------------------------


@attrs.frozen
class OpaqueTokens:
    """Mints and verifies ``<kind>_<random>.<mac>`` values (authorization codes, refresh tokens)."""

    ring: KeyRing

    @staticmethod
    def _mac(secret: bytes, kind: str, random_part: str) -> bytes:
        return hmac.new(secret, f"{kind}.{random_part}".encode("ascii"), hashlib.sha256).digest()

    def mint(self, kind: str) -> tuple[str, str]:
        """A new value of ``kind`` and its token id (what storage keys on)."""
        if kind not in _KINDS:
            raise ValueError(f"unknown opaque token kind {kind!r}")
        random_part = b64url(secrets.token_bytes(_RANDOM_BYTES))
        mac = self._mac(self.ring.active_hmac_secret, kind, random_part)
        return f"{kind}_{random_part}.{b64url(mac)}", self.token_id(random_part)

    @staticmethod
    def token_id(random_part: str) -> str:
        return hashlib.sha256(random_part.encode("ascii")).hexdigest()

    @staticmethod
    def _split(token: str, kind: str) -> tuple[str, bytes] | None:
        prefix = kind + "_"
        if not token.startswith(prefix) or len(token) > 200:
            return None
        random_part, dot, mac_text = token[len(prefix) :].partition(".")
        if not dot:
            return None
        try:
            if len(b64url_decode(random_part)) != _RANDOM_BYTES:
                return None
            mac = b64url_decode(mac_text)  # canonical only: one token, one spelling
        except ValueError:
            return None
        return random_part, mac

    def verify(self, token: str, kind: str) -> str | None:
        """The token id when ``token`` is a genuine value of ``kind`` (any secret in the ring)."""
        parts = self._split(token, kind)
        if parts is None:
            return None
        random_part, mac = parts
        valid = False
        # Check every secret (no early exit) so timing does not reveal which one matched.
        for secret in self.ring.hmac_secrets:
            valid |= hmac.compare_digest(self._mac(secret, kind, random_part), mac)
        return self.token_id(random_part) if valid else None

    # The rotated refresh token's successor response is kept for the retry grace. Sealing it
    # with a key derived from the presented token's random part means storage holds nothing
    # usable: only whoever presents the old refresh token again can open it.
    @staticmethod
    def _seal_key(random_part: str) -> bytes:
        return hmac.new(
            random_part.encode("ascii"), b"authproxy successor response", hashlib.sha256
        ).digest()

    def seal(self, token: str, kind: str, payload: Mapping[str, Any]) -> dict[str, object]:
        """Encrypt ``payload`` so that only a holder of ``token`` can open it again."""
        parts = self._split(token, kind)
        if parts is None:
            raise ValueError("not a token of this kind")
        nonce = secrets.token_bytes(12)
        plaintext = json.dumps(dict(payload), separators=(",", ":")).encode("utf-8")
        ciphertext = AESGCM(self._seal_key(parts[0])).encrypt(nonce, plaintext, kind.encode())
        return {"alg": "A256GCM", "nonce": b64url(nonce), "ciphertext": b64url(ciphertext)}

    def unseal(
        self, token: str, kind: str, sealed: Mapping[str, object]
    ) -> dict[str, object] | None:
        """The payload sealed by :meth:`seal` with the same token, or None."""
        parts = self._split(token, kind)
        if parts is None or sealed.get("alg") != "A256GCM":
            return None
        try:
            nonce = b64url_decode(str(sealed["nonce"]))
            ciphertext = b64url_decode(str(sealed["ciphertext"]))
            plaintext = AESGCM(self._seal_key(parts[0])).decrypt(nonce, ciphertext, kind.encode())
            value = loads_untrusted(plaintext)
        except (KeyError, ValueError, InvalidTag):
            return None
        return value if isinstance(value, dict) else None


# -- JWT access tokens (RFC 9068) ----------------------------------------------------------


@attrs.frozen
class IssuedAccessToken:
    """A signed access token and the claims the server needs to track it."""

    token: str = attrs.field(repr=False)
    jti: str
    iat: int
    exp: int
    claims: dict[str, Any] = attrs.field(eq=False)


@attrs.frozen
class AccessTokenIssuer:
    """Mints RFC 9068 JWT access tokens signed by the ring's active key."""

    ring: KeyRing
    clock: Clock
    issuer: str

    def issue(
        self,
        *,
        subject: str,
        audience: str,
        client_id: str,
        scopes: Iterable[str],
        tsid: str,
        lifespan: float,
        name: str | None = None,
        email: str | None = None,
        email_verified: bool | None = None,
        preferred_username: str | None = None,
    ) -> IssuedAccessToken:
        """Sign a token valid for ``lifespan`` seconds from now.

        The user's profile claims ride along (when known) so that the userinfo endpoint
        answers from the verified token alone.
        """
        key = self.ring.active_signing_key
        iat = int(self.clock.seconds())
        exp = iat + int(lifespan)
        jti = secrets.token_urlsafe(16)
        scope_list = list(scopes)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": exp,
            "iat": iat,
            "jti": jti,
            "client_id": client_id,
            "scope": " ".join(scope_list),
            "scp": scope_list,
            "tsid": tsid,
        }
        if name:
            claims["name"] = name
        if email:
            claims["email"] = email
        if email_verified is not None:
            claims["email_verified"] = email_verified
        if preferred_username:
            claims["preferred_username"] = preferred_username
        header = json.dumps(
            {"alg": key.alg, "kid": key.kid, "typ": "at+jwt"}, separators=(",", ":")
        )
        token = sign_compact(
            key,
            header.encode("utf-8"),
            json.dumps(claims, separators=(",", ":")).encode("utf-8"),
        )
        return IssuedAccessToken(token=token, jti=jti, iat=iat, exp=exp, claims=claims)


#: RFC 9068 §2.1 names ``at+jwt``; RFC 7515 §4.1.9 makes ``typ`` case-insensitive and lets
#: the ``application/`` prefix be omitted, so both spellings are the same type.
ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
MAX_ACCESS_TOKEN_LENGTH = 16384


class InvalidAccessToken(ValueError):
    """Not an access token this server signed; ``str()`` says why, for the guard's 401."""


@attrs.frozen
class AccessTokenVerifier:
    """The one check that a JWT is an access token authproxy signed: used by the guard and by
    revocation, so a token is revocable exactly when its signature would pass the guard.

    Checks the canonical compact form, ``alg`` (asymmetric, from the shared table, and the
    one of the key named by ``kid``: the key fixes the algorithm, never the token), ``typ``,
    the signature against any key still in the ring, and ``iss``. It leaves ``aud``, ``exp``,
    ``nbf`` and the subject to the guard: revocation wants the claims of expired tokens too.

    ``typ``: the guard accepted ``at+jwt`` and ``application/at+jwt`` in any case, the old
    revocation check only ``at+jwt`` exactly. authproxy signs nothing but ``at+jwt``, so the
    two agreed on every token it issued; the guard's (RFC 7515) reading is the rule for both,
    so that no token the guard lets through is refused at revocation.
    """

    ring: KeyRing
    issuer: str

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of ``token``; raises InvalidAccessToken otherwise."""
        if len(token) > MAX_ACCESS_TOKEN_LENGTH:
            raise InvalidAccessToken("the access token is too long")
        try:
            # Canonical base64url only: one token, one spelling, in the guard and revocation.
            raw_header = split_compact_jws(token)[0]
        except ValueError:
            raise InvalidAccessToken(
                "the access token is not a JWT in canonical base64url"
            ) from None
        try:
            header = loads_untrusted(raw_header)
        except ValueError:  # UnicodeDecodeError included
            raise InvalidAccessToken("the access token is not a JWT") from None
        if not isinstance(header, dict):
            raise InvalidAccessToken("the access token is not a JWT")
        alg = header.get("alg")
        if alg not in ASYMMETRIC_ALGS:
            raise InvalidAccessToken(f"the signing algorithm {str(alg)[:20]!r} is not accepted")
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidAccessToken("the token is not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        signing_key = self.ring.key_for_kid(kid) if isinstance(kid, str) else None
        if signing_key is None:
            raise InvalidAccessToken("the access token was signed by an unknown key")
        if signing_key.alg != alg:
            raise InvalidAccessToken("the signing algorithm does not match the key")
        jws = JWS()
        try:
            jws.deserialize(token)
            jws.verify(signing_key.jwk, alg=signing_key.alg)
        except (JWException, ValueError, TypeError, RecursionError):
            raise InvalidAccessToken("the access token signature is invalid") from None
        try:
            claims = loads_untrusted(jws.payload)
        except ValueError:
            raise InvalidAccessToken("the access token claims are not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidAccessToken("the access token claims are not a JSON object")
        if claims.get("iss") != self.issuer:
            raise InvalidAccessToken("the access token was issued by another issuer")
        return claims

    def claims(self, token: str) -> dict[str, Any] | None:
        """The claims of ``token``, or None when :meth:`verify` refuses it."""
        try:
            return self.verify(token)
        except InvalidAccessToken:
            return None
