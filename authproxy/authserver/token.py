"""The token endpoint, ``/oauth/token``: client authentication, then the grant's handler.

Which grant types exist, and what each does, is the grant registry's (``grants/``): this
endpoint authenticates the client, checks that it registered the grant and that storage
has room, and hands over to the registered grant.
"""

from __future__ import annotations

import math

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from authproxy.authserver.clients import ClientResolver, authenticated_client
from authproxy.authserver.grants import GRANTS, GrantRegistry
from authproxy.authserver.grants.issuance import TokenIssuance, TokenSettings
from authproxy.authserver.grants.registry import Grant
from authproxy.authserver.ratelimit import ClientRequestLimits
from authproxy.http.cors import CrossOriginPost
from authproxy.http.errors import OAuthError
from authproxy.http.forms import OAUTH_FORM
from authproxy.http.responses import NO_STORE, json_body
from authproxy.ops.metrics import EventCounters
from authproxy.storage import Storage, StorageFull
from authproxy.storage.models import RegisteredClient
from authproxy.storage.round_trips import together
from authproxy.tokens import AccessTokenIssuer, Clock, OpaqueTokens
from authproxy.upstream.interface import IUpstreamProvider

__all__ = ["TokenResource", "TokenSettings"]


class _GrantAttempt:
    """The grant type a token request named, once known to be a supported one."""

    grant_type = "other"


class TokenResource(CrossOriginPost):
    """``POST /oauth/token`` for public clients (PKCE), JSON answers that are never cached."""

    log = Logger()

    def __init__(
        self,
        *,
        storage: Storage,
        provider: IUpstreamProvider,
        clock: Clock,
        issuer: AccessTokenIssuer,
        opaque: OpaqueTokens,
        settings: TokenSettings,
        limits: ClientRequestLimits | None = None,
        clients: ClientResolver | None = None,
        grants: GrantRegistry = GRANTS,
        events: EventCounters | None = None,
    ) -> None:
        super().__init__()
        self.clients = clients or ClientResolver(storage.clients)
        self.limits = limits
        self.storage = storage
        self.events = events or EventCounters()
        tokens = TokenIssuance(storage, provider, clock, issuer, opaque, settings, self.events)
        self.grants = grants.handlers(tokens)

    async def handle_POST(self, request: Request) -> bytes:
        # Counted by grant type (only the supported ones: the label set stays fixed) and
        # outcome, the OAuth error code being the outcome of a refusal.
        attempt = _GrantAttempt()
        try:
            answer = await self._exchange(request, attempt)
        except OAuthError as e:
            self.events.token_grants.inc(attempt.grant_type, e.error)
            raise
        self.events.token_grants.inc(attempt.grant_type, "success")
        return answer

    async def _exchange(self, request: Request, attempt: _GrantAttempt) -> bytes:
        self.cors.allow(request)
        if self.limits is not None:
            await self.limits.check_source(request, "Token request")
        params = OAUTH_FORM.read(request)
        client = await authenticated_client(self.clients, request, params)
        request.client_id = client.client_id  # type: ignore[attr-defined]  # the access log's
        # The client's rate and the room are independent: asked together (on Redis one
        # round trip's wait, not two), refused in this order.
        limits = (
            []
            if self.limits is None
            else [self.limits.check_client(client.client_id, "Token request")]
        )
        *_, grant = await together(*limits, self._room_for(client, params, attempt))
        response = await grant.exchange(client, params)
        # The grant has happened: a use that fails to be recorded must not turn it into an
        # error (a rotated refresh token's answer lost), so the answer does not wait for it.
        self.storage.clients.touch_client(client.client_id).addErrback(
            self._use_not_recorded, client.client_id
        )
        return json_body(request, 200, response, NO_STORE)

    def _use_not_recorded(self, failure: Failure, client_id: str) -> None:
        self.log.warn(
            "Could not record a use of client {client_id}: {error}",
            client_id=client_id,
            error=failure.getErrorMessage(),
        )

    async def _room_for(
        self, client: RegisteredClient, params: dict[str, str], attempt: _GrantAttempt
    ) -> Grant:
        """The grant the request names, once the client may use it and storage has room."""
        grant_type = params.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        grant = self.grants.get(grant_type)
        if grant is None:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant_type} is not supported")
        attempt.grant_type = grant_type
        if grant_type not in client.grant_types:
            raise OAuthError(
                "unauthorized_client", f"the client did not register the {grant_type} grant"
            )
        await self._check_room(client.client_id, grant.creates_family)
        return grant

    async def _check_room(self, client_id: str, new_family: bool) -> None:
        """Refuse before anything changes (the code stays unredeemed, the refresh token
        unrotated) when storage is full: storage forgets no revocation and no other user's
        login to make room, so the client retries once entries expire."""
        try:
            await self.storage.families.issuance_room(client_id, new_family)
        except StorageFull as e:
            retry_after = 60.0 if e.retry_after is None else e.retry_after
            raise OAuthError(
                "temporarily_unavailable",
                "the server cannot issue more tokens right now; try again later",
                status=503,
                headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
            ) from None
