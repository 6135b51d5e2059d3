"""The JWS algorithm table: which ``alg`` a key type signs with, and which it may verify.

One table for every JWT authproxy signs (access tokens), verifies (its own access tokens in
the guard and at revocation) and accepts from upstream (id_tokens). Only asymmetric
algorithms exist here: ``none`` and HS* are never accepted, so the HS256-with-the-public-key
trick cannot work, and a token's ``alg`` must also fit the key that verifies it.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto.jwk import JWK

MIN_RSA_BITS = 2048

RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
#: JWK ``crv`` -> the one ECDSA ``alg`` for that curve (RFC 7518 §3.4).
EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
OKP_CURVES = frozenset({"Ed25519", "Ed448"})
#: Every signature algorithm authproxy accepts on any JWT.
ASYMMETRIC_ALGS = RSA_ALGS | frozenset(EC_ALGS.values()) | {"EdDSA"}
#: The digest of each ECDSA algorithm (for signing with ``cryptography`` directly).
EC_HASHES: dict[str, hashes.HashAlgorithm] = {
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
    "ES512": hashes.SHA512(),
}
# cryptography's curve names -> JWK crv.
_CURVE_CRV = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def signing_alg(key: Any) -> str:
    """The ``alg`` authproxy signs with using the private ``key``; ValueError if unacceptable."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} are required"
            )
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        alg = EC_ALGS.get(_CURVE_CRV.get(key.curve.name, ""))
        if alg is None:
            raise ValueError(
                f"EC curve {key.curve.name} is not supported (use P-256, P-384 or P-521)"
            )
        return alg
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ValueError(f"unsupported key type {type(key).__name__} (use RSA, EC or Ed25519)")


def key_accepts(key: JWK, alg: str) -> bool:
    """Whether ``key`` may verify a signature made with ``alg`` (type, curve and its own alg)."""
    declared = key.get("alg")
    if declared and declared != alg:
        return False
    kty = key.get("kty")
    if kty == "RSA":
        return alg in RSA_ALGS
    if kty == "EC":
        return EC_ALGS.get(key.get("crv", "")) == alg
    if kty == "OKP":
        return alg == "EdDSA" and key.get("crv") in OKP_CURVES
    return False
