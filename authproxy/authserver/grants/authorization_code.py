"""The ``authorization_code`` grant (RFC 6749 §4.1.3, PKCE per RFC 7636): code -> tokens.

Every code redemption creates a token family (its access tokens and refresh tokens). A code
is single use: a second redemption revokes the family (RFC 6749 §10.5).
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from authproxy.authserver.grants.issuance import GrantHandler, Issuance, invalid_grant
from authproxy.authserver.token_families import end_token_family
from authproxy.storage.models import RegisteredClient, TokenFamily
from authproxy.tokens import AUTHORIZATION_CODE, verify_pkce


class AuthorizationCodeGrant(GrantHandler):
    """Redeem an authorization code: a new token family."""

    grant_type: ClassVar[str] = "authorization_code"
    creates_family: ClassVar[bool] = True

    async def exchange(self, client: RegisteredClient, params: dict[str, str]) -> dict[str, Any]:
        _, code_id = self.tokens.opaque_param(
            params, "code", AUTHORIZATION_CODE, "authorization code"
        )
        record = await self.tokens.storage.codes.redeem_code(code_id)
        if record is None:
            raise invalid_grant("the authorization code is unknown or expired")
        if record.redeemed:
            self.tokens.events.authorization_code_replay.inc()
            self.tokens.log.warn(
                "Authorization code of client {client_id} presented again: revoking its tokens",
                client_id=record.client_id,
            )
            await end_token_family(
                self.tokens.storage.families, self.tokens.provider, record.family_id, record.tsid
            )
            raise invalid_grant("the authorization code was already used")
        # From here on the code is spent: a failed attempt burns it and its upstream session.
        problem = None
        if record.client_id != client.client_id:
            problem = "the authorization code was issued to another client"
        elif params.get("redirect_uri") is None and record.redirect_uri_given:
            problem = "redirect_uri is required"
        elif params.get("redirect_uri", record.redirect_uri) != record.redirect_uri:
            problem = "redirect_uri does not match the authorization request"
        elif not params.get("code_verifier"):
            problem = "code_verifier is required"
        elif not verify_pkce(params["code_verifier"], record.code_challenge):
            problem = "code_verifier does not match the code_challenge"
        if problem is not None:
            await end_token_family(
                self.tokens.storage.families, self.tokens.provider, None, record.tsid
            )
            raise invalid_grant(problem)
        resource = self.tokens.audience(params.get("resource"), record.resource)

        now = self.tokens.clock.seconds()
        family_expires_at = now + self.tokens.settings.access_token_lifespan
        if "refresh_token" in client.grant_types:
            family_expires_at = max(
                family_expires_at, record.created_at + self.tokens.settings.refresh_token_lifespan
            )
        grant = Issuance(
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
            auth_time=record.created_at,  # the code is made as the upstream login completes
            nonce=record.nonce,
            email_verified=record.email_verified,
            preferred_username=record.preferred_username,
        )
        await self.tokens.storage.families.put_family(
            TokenFamily(
                family_id=grant.family_id,
                client_id=client.client_id,
                user_id=grant.user_id,
                tsid=grant.tsid,
                expires_at=family_expires_at,
            )
        )
        # Linked before anything is handed out, so a concurrent replay finds what to revoke.
        await self.tokens.storage.codes.set_code_family(code_id, grant.family_id)
        minted = self.tokens.mint(grant)
        if minted.refresh is not None:
            await self.tokens.storage.families.put_refresh_token(minted.refresh)
        await self.tokens.storage.families.add_family_access_token(
            grant.family_id, minted.access.jti, float(minted.access.exp)
        )
        self.tokens.log.info(
            "Redeemed an authorization code of client {client_id} for user {user_id}",
            client_id=client.client_id,
            user_id=grant.user_id,
        )
        return minted.response
