"""Which user claims an OpenID client receives, by the scopes it was granted (OIDC Core §5.4).

One table for the ID token and the userinfo endpoint, so both always agree: ``sub`` always,
``name`` and ``preferred_username`` with ``profile``, ``email`` and ``email_verified`` with
``email``. Values come from the upstream identity as it was at login; a claim the upstream
IdP did not provide is left out, never invented (``email_verified`` included).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

OPENID_SCOPE = "openid"
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "profile": ("name", "preferred_username"),
    "email": ("email", "email_verified"),
}
# What every ID token carries (OIDC Core §2), besides the scope-dependent claims above.
ID_TOKEN_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "at_hash")


def claims_supported(scopes_supported: Iterable[str]) -> list[str]:
    """``claims_supported`` for discovery: the ID token's own claims plus each served scope's."""
    claims = list(ID_TOKEN_CLAIMS)
    for scope in scopes_supported:
        claims.extend(SCOPE_CLAIMS.get(scope, ()))
    return claims


def scoped_claims(scopes: Iterable[str], identity: Mapping[str, object]) -> dict[str, object]:
    """The claims of ``identity`` (claim name -> value, None when unknown) ``scopes`` allow."""
    granted = set(scopes)
    return {
        claim: identity[claim]
        for scope, claims in SCOPE_CLAIMS.items()
        if scope in granted
        for claim in claims
        if identity.get(claim) is not None
    }
