"""The token endpoint, ``/oauth/token``: authorization_code and refresh_token grants.

Every code redemption creates a token family (its access tokens and refresh tokens). A code
is single use: a second redemption revokes the family (RFC 6749 §10.5). A refresh token
rotates on every use; presenting it again within ``refresh_reuse_grace`` is a retry that
returns the same successor (a response lost on the network must not log the user out), and
after the grace it is reuse, which revokes the whole family (OAuth 2.1 §4.3.1).

A family lives ``refresh_token_lifespan`` from the login: rotation hands out new values, not
more time, matching the upstream token session created at the same login.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver._common import authenticated_client
from authproxy.authserver.ratelimit import ClientRequestLimits
from authproxy.authserver.scopes import split_scope
from authproxy.authserver.token_families import end_token_family
from authproxy.http.cors import CrossOriginPost
from authproxy.http.errors import OAuthError
from authproxy.http.forms import OAUTH_FORM
from authproxy.http.responses import NO_STORE, json_body
from authproxy.storage.interface import IStorage, StorageFull
from authproxy.storage.models import RefreshToken, RegisteredClient, TokenFamily
from authproxy.tokens import (
    AUTHORIZATION_CODE,
    REFRESH_TOKEN,
    AccessTokenIssuer,
    Clock,
    IssuedAccessToken,
    OpaqueTokens,
    verify_pkce,
)
from authproxy.upstream.interface import IUpstreamProvider


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
class _Grant:
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


@attrs.frozen
class _Minted:
    response: dict[str, Any]  # the JSON token response
    access: IssuedAccessToken
    refresh: RefreshToken | None  # the record to store for the new refresh token


class TokenResource(CrossOriginPost):
    """``POST /oauth/token`` for public clients (PKCE), JSON answers that are never cached."""

    log = Logger()

    def __init__(
        self,
        *,
        storage: IStorage,
        provider: IUpstreamProvider,
        clock: Clock,
        issuer: AccessTokenIssuer,
        opaque: OpaqueTokens,
        settings: TokenSettings,
        limits: ClientRequestLimits | None = None,
    ) -> None:
        super().__init__()
        self.limits = limits
        self.storage = storage
        self.provider = provider
        self.clock = clock
        self.issuer = issuer
        self.opaque = opaque
        self.settings = settings

    async def handle_POST(self, request: Request) -> bytes:
        self.cors.allow(request)
        if self.limits is not None:
            self.limits.check_source(request, "Token request")
        params = OAUTH_FORM.read(request)
        client = await authenticated_client(self.storage, request, params)
        if self.limits is not None:
            self.limits.check_client(client.client_id, "Token request")
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        if grant_type not in ("authorization_code", "refresh_token"):
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type} is not supported")
        if grant_type not in client.grant_types:
            raise OAuthError(
                "unauthorized_client", f"the client did not register the {grant_type} grant"
            )
        await self._check_room(client.client_id, grant_type == "authorization_code")
        if grant_type == "authorization_code":
            response = await self._authorization_code(client, params)
        else:
            response = await self._refresh_token(client, params)
        await self.storage.touch_client(client.client_id)
        return json_body(request, 200, response, NO_STORE)

    async def _check_room(self, client_id: str, new_family: bool) -> None:
        """Refuse before anything changes (the code stays unredeemed, the refresh token
        unrotated) when storage is full: storage forgets no revocation and no other user's
        login to make room, so the client retries once entries expire."""
        try:
            await self.storage.issuance_room(client_id, new_family)
        except StorageFull as e:
            retry_after = 60.0 if e.retry_after is None else e.retry_after
            raise OAuthError(
                "temporarily_unavailable",
                "the server cannot issue more tokens right now; try again later",
                status=503,
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            ) from None

    # -- authorization_code -------------------------------------------------------------
    async def _authorization_code(
        self, client: RegisteredClient, params: dict[str, str]
    ) -> dict[str, Any]:
        code = params.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        code_id = self.opaque.verify(code, AUTHORIZATION_CODE)
        if code_id is None:
            raise invalid_grant("the authorization code is invalid")
        record = await self.storage.redeem_code(code_id)
        if record is None:
            raise invalid_grant("the authorization code is unknown or expired")
        if record.redeemed:
            self.log.warn(
                "Authorization code of client {client_id} presented again: revoking its tokens",
                client_id=record.client_id,
            )
            await end_token_family(self.storage, self.provider, record.family_id, record.tsid)
            raise invalid_grant("the authorization code was already used")
        # From here on the code is spent: a failed attempt burns it and its upstream session.
        problem = None
        if record.client_id != client.client_id:
            problem = "the authorization code was issued to another client"
        elif params.get("redirect_uri") is None:
            problem = "redirect_uri is required"
        elif params["redirect_uri"] != record.redirect_uri:
            problem = "redirect_uri does not match the authorization request"
        elif not params.get("code_verifier"):
            problem = "code_verifier is required"
        elif not verify_pkce(params["code_verifier"], record.code_challenge):
            problem = "code_verifier does not match the code_challenge"
        if problem is not None:
            await end_token_family(self.storage, self.provider, None, record.tsid)
            raise invalid_grant(problem)
        resource = self._resource(params.get("resource"), record.resource)

        now = self.clock.seconds()
        family_expires_at = now + self.settings.access_token_lifespan
        if "refresh_token" in client.grant_types:
            family_expires_at = max(
                family_expires_at, record.created_at + self.settings.refresh_token_lifespan
            )
        grant = _Grant(
            client=client,
            user_id=record.user_id,
            tsid=record.tsid,
            scopes=record.scopes,
            refresh_scopes=record.scopes,
            resource=resource,
            family_id=secrets.token_urlsafe(16),
            family_expires_at=family_expires_at,
            name=record.name,
            email=record.email,
        )
        await self.storage.put_family(
            TokenFamily(
                family_id=grant.family_id,
                client_id=client.client_id,
                user_id=grant.user_id,
                tsid=grant.tsid,
                expires_at=family_expires_at,
            )
        )
        # Linked before anything is handed out, so a concurrent replay finds what to revoke.
        await self.storage.set_code_family(code_id, grant.family_id)
        minted = self._mint(grant)
        if minted.refresh is not None:
            await self.storage.put_refresh_token(minted.refresh)
        await self.storage.add_family_access_token(
            grant.family_id, minted.access.jti, float(minted.access.exp)
        )
        self.log.info(
            "Redeemed an authorization code of client {client_id} for user {user_id}",
            client_id=client.client_id,
            user_id=grant.user_id,
        )
        return minted.response

    # -- refresh_token --------------------------------------------------------------------
    async def _refresh_token(
        self, client: RegisteredClient, params: dict[str, str]
    ) -> dict[str, Any]:
        token = params.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        token_id = self.opaque.verify(token, REFRESH_TOKEN)
        if token_id is None:
            raise invalid_grant("the refresh token is invalid")
        record = await self.storage.get_refresh_token(token_id)
        if record is None:
            raise invalid_grant("the refresh token is unknown or expired")
        if record.client_id != client.client_id:
            raise invalid_grant("the refresh token was issued to another client")
        family = await self.storage.get_family(record.family_id)
        if family is None or family.revoked:
            raise invalid_grant("the refresh token was revoked")

        now = self.clock.seconds()
        if record.rotated_at is not None:
            retry = self._retry_response(token, record, now)
            if retry is not None:
                self.log.info(
                    "Refresh token of client {client_id} presented again within the grace: "
                    "same successor",
                    client_id=client.client_id,
                )
                return retry
            self.log.warn(
                "Rotated refresh token of client {client_id} reused: revoking its family",
                client_id=client.client_id,
            )
            await end_token_family(self.storage, self.provider, record.family_id, record.tsid)
            raise invalid_grant("the refresh token was already used; sign in again")

        scopes = record.scopes
        if params.get("scope") is not None:
            scopes = split_scope(params["scope"])
            if wider := [s for s in scopes if s not in record.scopes]:
                raise OAuthError(
                    "invalid_scope", f"scope beyond the original grant: {' '.join(wider)}"
                )
            if not scopes:
                scopes = record.scopes
        grant = _Grant(
            client=client,
            user_id=record.user_id,
            tsid=record.tsid,
            scopes=scopes,
            refresh_scopes=record.scopes,
            resource=self._resource(params.get("resource"), record.resource),
            family_id=record.family_id,
            family_expires_at=record.expires_at,
            name=record.name,
            email=record.email,
        )
        minted = self._mint(grant)
        sealed = self.opaque.seal(token, REFRESH_TOKEN, minted.response)
        if not await self.storage.mark_rotated(token_id, now, sealed):
            # A concurrent request rotated it first: answer as its retry.
            winner = await self.storage.get_refresh_token(token_id)
            retry = None if winner is None else self._retry_response(token, winner, now)
            if retry is None:
                raise invalid_grant("the refresh token was already used")
            return retry
        if minted.refresh is not None:
            await self.storage.put_refresh_token(minted.refresh)
        await self.storage.add_family_access_token(
            grant.family_id, minted.access.jti, float(minted.access.exp)
        )
        return minted.response

    def _retry_response(
        self, token: str, record: RefreshToken, now: float
    ) -> dict[str, Any] | None:
        if record.rotated_at is None or record.successor_response is None:
            return None
        if now - record.rotated_at > self.settings.refresh_reuse_grace:
            return None
        return self.opaque.unseal(token, REFRESH_TOKEN, record.successor_response)

    # -- shared ------------------------------------------------------------------------------
    def _resource(self, requested: str | None, granted: str) -> str:
        """The audience of the access token (RFC 8707)."""
        audiences = self.settings.allowed_audiences
        if requested is not None:
            if requested not in audiences:
                raise OAuthError(
                    "invalid_target", "the requested resource is not served by this server"
                )
            if granted and requested != granted:
                raise OAuthError(
                    "invalid_target", "the requested resource is not the one authorized"
                )
            return requested
        if granted:
            if granted not in audiences:
                raise OAuthError("invalid_target", "the authorized resource is no longer served")
            return granted
        if len(audiences) == 1:
            return audiences[0]
        raise OAuthError("invalid_target", "resource is required: this server has several")

    def _mint(self, grant: _Grant) -> _Minted:
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
        )
        response: dict[str, Any] = {
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": access.exp - access.iat,
            "scope": " ".join(grant.scopes),
        }
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
            )
        return _Minted(response=response, access=access, refresh=refresh)
