"""Compact JWS signing with ``cryptography`` directly, for the algorithms authproxy issues.

jwcrypto's ``JWS`` builds header registries and re-validates on every signature, a large
share of the token endpoint's cost (benchmarks/README.md, P3). Verification stays with
jwcrypto (the guard verifies each token once and caches the result).
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from authproxy.keys.algorithms import EC_HASHES
from authproxy.keys.ring import SigningKey

Signer = Callable[[bytes], bytes]
_signers: dict[str, Signer] = {}


def b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def signer_for(key: SigningKey) -> Signer:
    """A function signing bytes with ``key`` per its JWS ``alg`` (cached by kid)."""
    signer = _signers.get(key.kid)
    if signer is None:
        if len(_signers) > 64:  # rotated-away keys; the ring holds a handful
            _signers.clear()
        signer = _signers[key.kid] = _make_signer(key)
    return signer


def _make_signer(key: SigningKey) -> Signer:
    private = key.jwk.get_op_key("sign")
    if key.alg == "EdDSA" and isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign
    if key.alg == "RS256" and isinstance(private, rsa.RSAPrivateKey):
        rsa_key = private
        return lambda data: rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if key.alg in EC_HASHES and isinstance(private, ec.EllipticCurvePrivateKey):
        ec_key = private
        algorithm = ec.ECDSA(EC_HASHES[key.alg])
        size = (ec_key.curve.key_size + 7) // 8

        def sign_ec(data: bytes) -> bytes:
            # JWS wants r || s at the curve's size, not the DER sequence cryptography gives.
            r, s = decode_dss_signature(ec_key.sign(data, algorithm))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")

        return sign_ec
    raise ValueError(f"cannot sign with {key.alg} using a {type(private).__name__}")


def sign_compact(key: SigningKey, header: bytes, payload: bytes) -> str:
    """``header.payload.signature`` for JSON ``header`` and ``payload`` bytes."""
    signing_input = b64url(header) + b"." + b64url(payload)
    signature = signer_for(key)(signing_input)
    return (signing_input + b"." + b64url(signature)).decode("ascii")
