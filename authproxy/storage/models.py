"""The records authproxy keeps. Frozen: storage hands out values, never live state.

All times are POSIX seconds from the injected reactor clock.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class RegisteredClient:
    """A client registered through RFC 7591 dynamic client registration."""

    client_id: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scopes: tuple[str, ...]
    client_name: str | None
    token_endpoint_auth_method: str
    created_at: float
    last_used_at: float | None = None  # None: never used (evicted first when the cap is hit)
    extra_metadata: dict[str, object] = attrs.field(factory=dict)
    # The rate-limit key of the source that registered it: at the cap, never-used clients
    # are evicted from the source holding the most of them first.
    owner: str = ""


@attrs.frozen
class PendingAuthorization:
    """An /oauth/authorize request waiting for the user to come back from the upstream IdP.

    Stored under ``state``, authproxy's own internal state value (never the client's).
    """

    state: str
    client_id: str
    redirect_uri: str
    client_state: str | None
    code_challenge: str
    code_challenge_method: str
    scopes: tuple[str, ...]
    resource: str
    created_at: float
    expires_at: float
    upstream_code_verifier: str = ""
    upstream_nonce: str = ""
    csrf_token: str = ""  # consent page form token, bound to this pending authorization
    consented: bool = False
    nonce: str | None = None  # the client's OpenID nonce, echoed in its ID token
    # The rate-limit key of the source that started it: at the cap, the source holding the
    # most logins in progress loses its oldest first.
    owner: str = ""
    # False when the request omitted redirect_uri (the client registered only this one):
    # the token request then need not repeat it (RFC 6749 §4.1.3)
    redirect_uri_given: bool = True


@attrs.frozen
class AuthorizationCode:
    """A single-use authorization code; kept after redemption until expiry so replay is detectable."""

    code_id: str  # lookup key derived from the opaque code (never the code itself)
    client_id: str
    redirect_uri: str
    code_challenge: str
    scopes: tuple[str, ...]
    resource: str
    user_id: str
    tsid: str
    created_at: float
    expires_at: float
    redeemed: bool = False
    family_id: str | None = None  # refresh-token family created by the first redemption
    name: str | None = None
    email: str | None = None
    # OpenID: the client's nonce and the profile claims beyond name and email (the user
    # authenticated at created_at: the code is made when the upstream login completes)
    nonce: str | None = None
    email_verified: bool | None = None
    preferred_username: str | None = None
    redirect_uri_given: bool = True  # as in PendingAuthorization


@attrs.frozen
class RefreshToken:
    """One refresh token of a family; rotation links it to its successor."""

    token_id: str  # lookup key derived from the opaque token
    family_id: str
    client_id: str
    user_id: str
    scopes: tuple[str, ...]
    resource: str
    tsid: str
    created_at: float
    expires_at: float
    rotated_at: float | None = None
    # The token response handed out when this token was rotated, kept only for the
    # retry grace so that a client retrying a lost response gets the same successor.
    successor_response: dict[str, object] | None = None
    name: str | None = None
    email: str | None = None
    # OpenID: when the user authenticated (the family's login), for refreshed ID tokens
    auth_time: float | None = None
    email_verified: bool | None = None
    preferred_username: str | None = None
    redirect_uri_given: bool = True  # as in PendingAuthorization


@attrs.frozen
class TokenFamily:
    """Everything issued from one authorization code: revoked as a whole on code replay or reuse."""

    family_id: str
    client_id: str
    user_id: str
    tsid: str
    expires_at: float
    revoked: bool = False
    access_token_jtis: tuple[tuple[str, float], ...] = ()  # (jti, exp) of issued access tokens


@attrs.frozen
class UpstreamTokenSession:
    """The upstream IdP's tokens for one login, stored under the token-session id (tsid)."""

    tsid: str
    upstream_name: str
    access_token: str
    refresh_token: str | None
    access_token_expires_at: float
    expires_at: float  # the session lives as long as authproxy's refresh tokens can
    subject: str
    claims: dict[str, object] = attrs.field(factory=dict)
    id_token: str | None = None
