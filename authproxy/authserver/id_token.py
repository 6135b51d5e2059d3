"""OpenID Connect ID tokens (OIDC Core §2, §3.1.3.6), issued with the ``openid`` scope.

Signed like access tokens, by the key ring's active key (same ``alg`` and ``kid``), so a
client verifies both with the one JWKS. ``aud`` is the client; ``auth_time`` is when the
upstream login completed and stays the same across refreshes (OIDC Core §12.2), as does
``sid``; ``nonce`` is echoed only in the ID token of the authorization code grant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import attrs

from authproxy.keys.ring import KeyRing
from authproxy.keys.signing import sign_compact
from authproxy.tokens import Clock, b64url

# OIDC Core §3.1.3.6: the hash of the ID token's JWS alg; Ed25519 signs with SHA-512 inside,
# the choice the OpenID errata and the common client libraries make for EdDSA.
_AT_HASH = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}


def at_hash(access_token: str, alg: str) -> str:
    """The left half of the access token's hash, base64url (OIDC Core §3.1.3.6)."""
    digest = _AT_HASH.get(alg[-3:], hashlib.sha512)(access_token.encode("ascii")).digest()
    return b64url(digest[: len(digest) // 2])


def session_id(family_id: str) -> str:
    """The ``sid`` of a login: derived from its token family, which it does not reveal."""
    return b64url(hashlib.sha256(b"authproxy sid\0" + family_id.encode()).digest()[:16])


@attrs.frozen
class IdTokenIssuer:
    """Mints ID tokens signed by the ring's active key."""

    ring: KeyRing
    clock: Clock
    issuer: str

    def issue(
        self,
        *,
        client_id: str,
        subject: str,
        lifespan: float,
        access_token: str,
        sid: str,
        auth_time: float | None,
        nonce: str | None = None,
        claims: Mapping[str, object] | None = None,
    ) -> str:
        """A signed ID token valid for ``lifespan`` seconds from now."""
        key = self.ring.active_signing_key
        iat = int(self.clock.seconds())
        payload: dict[str, object] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": client_id,
            "exp": iat + int(lifespan),
            "iat": iat,
            "sid": sid,
            "at_hash": at_hash(access_token, key.alg),
        }
        if auth_time is not None:
            payload["auth_time"] = int(auth_time)
        if nonce is not None:
            payload["nonce"] = nonce
        payload.update(claims or {})
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        return sign_compact(
            key,
            json.dumps(header, separators=(",", ":")).encode("utf-8"),
            json.dumps(payload, separators=(",", ":")).encode("utf-8"),
        )
