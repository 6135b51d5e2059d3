"""AtRestSealer: upstream IdP tokens encrypted before they reach Redis.

Redis is shared infrastructure: a dump, a replica or a backup must not hand out users'
upstream tokens. Each record is sealed with AES-256-GCM under a key derived (HKDF-SHA256)
from the active HMAC secret, and names the key by a short id, so that after a rotation of
the HMAC ring the records sealed under an older secret still open while it is in the ring.
The record's id is the associated data: a sealed record moved to another id does not open.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from authproxy.tokens import b64url, b64url_decode

_INFO = b"authproxy upstream tokens at rest"


class HMACSecretRing(Protocol):
    """The part of ``keys.KeyRing`` sealing reads (on every call: rotation is live)."""

    @property
    def hmac_secrets(self) -> tuple[bytes, ...]: ...


def _key(secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"key id" + key).hexdigest()[:16]


class AtRestSealer:
    """Seal with the ring's active HMAC secret; open with any secret still in the ring."""

    def __init__(self, ring: HMACSecretRing) -> None:
        self._ring = ring
        self._derived: dict[bytes, tuple[str, bytes]] = {}  # secret -> (key id, key)

    def _keys(self) -> list[tuple[str, bytes]]:
        keys = []
        for secret in self._ring.hmac_secrets:
            derived = self._derived.get(secret)
            if derived is None:
                key = _key(secret)
                derived = self._derived[secret] = (_key_id(key), key)
            keys.append(derived)
        if len(self._derived) > 4 * len(keys) + 4:  # forget secrets rotated out long ago
            live = set(self._ring.hmac_secrets)
            self._derived = {s: k for s, k in self._derived.items() if s in live}
        return keys

    def seal(self, plaintext: str, record_id: str) -> str:
        """``plaintext`` encrypted for storage under ``record_id`` (a JSON string)."""
        key_id, key = self._keys()[0]
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode(), record_id.encode())
        sealed = {"alg": "A256GCM", "kid": key_id, "nonce": b64url(nonce), "ct": b64url(ciphertext)}
        return json.dumps(sealed, separators=(",", ":"))

    def open(self, sealed: str, record_id: str) -> str | None:
        """The plaintext, or None when no secret in the ring opens it (rotated out or
        tampered with: the record is as good as gone)."""
        try:
            value = json.loads(sealed)
            if value.get("alg") != "A256GCM":
                return None
            nonce, ciphertext = b64url_decode(value["nonce"]), b64url_decode(value["ct"])
            for key_id, key in self._keys():
                if key_id == value["kid"]:
                    return AESGCM(key).decrypt(nonce, ciphertext, record_id.encode()).decode()
        except (ValueError, KeyError, TypeError, AttributeError, InvalidTag):
            return None
        return None
