"""The ``refresh_token`` grant (RFC 6749 §6, rotated per OAuth 2.1 §4.3.1).

A refresh token rotates on every use; presenting it again within ``refresh_reuse_grace`` is
a retry that returns the same successor (a response lost on the network must not log the
user out), and after the grace it is reuse, which revokes the whole family. A family lives
``refresh_token_lifespan`` from the login: rotation hands out new values, not more time.
"""

from __future__ import annotations

from typing import Any, ClassVar

from authproxy.authserver.grants.issuance import GrantHandler, Issuance, invalid_grant
from authproxy.authserver.scopes import split_scope
from authproxy.authserver.token_families import end_token_family
from authproxy.http.errors import OAuthError
from authproxy.storage.models import RefreshToken, RegisteredClient
from authproxy.storage.round_trips import together
from authproxy.tokens import REFRESH_TOKEN


class RefreshTokenGrant(GrantHandler):
    """Rotate a refresh token: new tokens in the same family."""

    grant_type: ClassVar[str] = "refresh_token"
    creates_family: ClassVar[bool] = False

    async def exchange(self, client: RegisteredClient, params: dict[str, str]) -> dict[str, Any]:
        token, token_id = self.tokens.opaque_param(
            params, "refresh_token", REFRESH_TOKEN, "refresh token"
        )
        found = await self.tokens.storage.families.get_refresh_token_in_family(token_id)
        if found is None:
            raise invalid_grant("the refresh token is unknown or expired")
        record, family_live = found
        if record.client_id != client.client_id:
            raise invalid_grant("the refresh token was issued to another client")
        if not family_live:
            raise invalid_grant("the refresh token was revoked")

        now = self.tokens.clock.seconds()
        if record.rotated_at is not None:
            retry = self._retry_response(token, record, now)
            if retry is not None:
                self.tokens.log.info(
                    "Refresh token of client {client_id} presented again within the grace: "
                    "same successor",
                    client_id=client.client_id,
                )
                return retry
            self.tokens.events.refresh_token_reuse.inc()
            self.tokens.log.warn(
                "Rotated refresh token of client {client_id} reused: revoking its family",
                client_id=client.client_id,
            )
            await end_token_family(
                self.tokens.storage.families, self.tokens.provider, record.family_id, record.tsid
            )
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
        grant = Issuance(
            client=client,
            user_id=record.user_id,
            tsid=record.tsid,
            scopes=scopes,
            refresh_scopes=record.scopes,
            resource=self.tokens.audience(params.get("resource"), record.resource),
            family_id=record.family_id,
            family_expires_at=record.expires_at,
            name=record.name,
            email=record.email,
            auth_time=record.auth_time,  # a refreshed ID token: same login, no nonce
            email_verified=record.email_verified,
            preferred_username=record.preferred_username,
        )
        minted = self.tokens.mint(grant)
        sealed = self.tokens.opaque.seal(token, REFRESH_TOKEN, minted.response)
        if not await self.tokens.storage.families.mark_rotated(token_id, now, sealed):
            # A concurrent request rotated it first: answer as its retry.
            winner = await self.tokens.storage.families.get_refresh_token(token_id)
            retry = None if winner is None else self._retry_response(token, winner, now)
            if retry is None:
                raise invalid_grant("the refresh token was already used")
            return retry
        # Independent writes, sent together: on Redis one round trip's wait instead of two.
        families = self.tokens.storage.families
        writes = [
            families.add_family_access_token(
                grant.family_id, minted.access.jti, float(minted.access.exp)
            )
        ]
        if minted.refresh is not None:
            writes.append(families.put_refresh_token(minted.refresh))
        await together(*writes)
        return minted.response

    def _retry_response(
        self, token: str, record: RefreshToken, now: float
    ) -> dict[str, Any] | None:
        if record.rotated_at is None or record.successor_response is None:
            return None
        if now - record.rotated_at > self.tokens.settings.refresh_reuse_grace:
            return None
        return self.tokens.opaque.unseal(token, REFRESH_TOKEN, record.successor_response)
