"""What every grant shares: the endpoint's collaborators, the audience and the minting.

A grant (``authorization_code``, ``refresh_token``, ...) decides *whether* to issue and for
what; :class:`TokenIssuance` then mints the access token (and a refresh token when the
client registered that grant, and an ID token when the ``openid`` scope was granted) the
same way for every grant.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.logger import Logger

from authproxy.authserver.audience import InvalidTarget, ResourceIndicators
from authproxy.authserver.id_token import IdTokenIssuer, session_id
from authproxy.authserver.openid_claims import OPENID_SCOPE, scoped_claims
from authproxy.http.errors import OAuthError
from authproxy.ops.metrics import EventCounters
from authproxy.storage import Storage
from authproxy.storage.models import RefreshToken, RegisteredClient
from authproxy.tokens import (
    REFRESH_TOKEN,
    AccessTokenIssuer,
    Clock,
    IssuedAccessToken,
    OpaqueTokens,
)
from authproxy.upstream.interface import IUpstreamProvider

_TOKEN_LOG = Logger(namespace="authproxy.authserver.token.TokenResource")


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description)


@attrs.frozen
class TokenSettings:
    """The token endpoint's knobs (from ``auth_server``)."""

    access_token_lifespan: float
    refresh_token_lifespan: float
    refresh_reuse_grace: float
    allowed_audiences: tuple[str, ...]


@attrs.frozen
class Issuance:
    """What a new set of tokens is issued for."""

    client: RegisteredClient
    user_id: str
    tsid: str
    scopes: tuple[str, ...]  # of the access token
    refresh_scopes: tuple[str, ...]  # of the refresh token (never narrowed, RFC 6749 §6)
    resource: str
    family_id: str
    family_expires_at: float
    name: str | None
    email: str | None
    # OpenID: when the user logged in, the client's nonce (code grant only), more profile
    auth_time: float | None = None
    nonce: str | None = None
    email_verified: bool | None = None
    preferred_username: str | None = None

    def identity(self) -> dict[str, object]:
        """The user's profile claims (None: unknown), for ID tokens."""
        return {
            "name": self.name,
            "preferred_username": self.preferred_username,
            "email": self.email,
            "email_verified": self.email_verified,
        }


@attrs.frozen
class Minted:
    response: dict[str, Any]  # the JSON token response
    access: IssuedAccessToken
    refresh: RefreshToken | None  # the record to store for the new refresh token


@attrs.define
class TokenIssuance:
    """The token endpoint's collaborators, as every grant sees them."""

    storage: Storage
    provider: IUpstreamProvider
    clock: Clock
    issuer: AccessTokenIssuer
    opaque: OpaqueTokens
    settings: TokenSettings
    events: EventCounters = attrs.field(factory=EventCounters)
    resources: ResourceIndicators = attrs.field(init=False)
    id_tokens: IdTokenIssuer = attrs.field(init=False)
    # The grants log as the token endpoint always has (an instance attribute: no re-naming).
    log: Logger = attrs.field(init=False, default=_TOKEN_LOG, repr=False)

    def __attrs_post_init__(self) -> None:
        self.resources = ResourceIndicators(self.settings.allowed_audiences)
        self.id_tokens = IdTokenIssuer(self.issuer.ring, self.issuer.clock, self.issuer.issuer)

    def opaque_param(
        self, params: dict[str, str], name: str, kind: str, what: str
    ) -> tuple[str, str]:
        """(value, token id) of the opaque ``kind`` value in parameter ``name``, else an error."""
        value = params.get(name)
        if not value:
            raise OAuthError("invalid_request", f"{name} is required")
        token_id = self.opaque.verify(value, kind)
        if token_id is None:
            raise invalid_grant(f"the {what} is invalid")
        return value, token_id

    def audience(self, requested: str | None, granted: str) -> str:
        """The audience of the access token (RFC 8707)."""
        try:
            return self.resources.at_token(requested, granted)
        except InvalidTarget as e:
            raise OAuthError("invalid_target", str(e)) from None

    def mint(self, grant: Issuance) -> Minted:
        """A new access token, and a refresh token when the client registered that grant."""
        access = self.issuer.issue(
            subject=grant.user_id,
            audience=grant.resource,
            client_id=grant.client.client_id,
            scopes=grant.scopes,
            tsid=grant.tsid,
            lifespan=self.settings.access_token_lifespan,
            name=grant.name,
            email=grant.email,
            email_verified=grant.email_verified,
            preferred_username=grant.preferred_username,
        )
        response: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.exp - access.iat,
            "scope": " ".join(grant.scopes),
        }
        if OPENID_SCOPE in grant.scopes:
            response["id_token"] = self.id_tokens.issue(
                client_id=grant.client.client_id,
                subject=grant.user_id,
                lifespan=self.settings.access_token_lifespan,
                access_token=access.token,
                sid=session_id(grant.family_id),
                auth_time=grant.auth_time,
                nonce=grant.nonce,
                claims=scoped_claims(grant.scopes, grant.identity()),
            )
        refresh = None
        if "refresh_token" in grant.client.grant_types:
            value, token_id = self.opaque.mint(REFRESH_TOKEN)
            response["refresh_token"] = value
            refresh = RefreshToken(
                token_id=token_id,
                family_id=grant.family_id,
                client_id=grant.client.client_id,
                user_id=grant.user_id,
                scopes=grant.refresh_scopes,
                resource=grant.resource,
                tsid=grant.tsid,
                created_at=self.clock.seconds(),
                expires_at=grant.family_expires_at,
                name=grant.name,
                email=grant.email,
                auth_time=grant.auth_time,
                email_verified=grant.email_verified,
                preferred_username=grant.preferred_username,
            )
        return Minted(response=response, access=access, refresh=refresh)


class GrantHandler:
    """Base of the grant classes: holds the shared :class:`TokenIssuance`."""

    def __init__(self, tokens: TokenIssuance) -> None:
        self.tokens = tokens
