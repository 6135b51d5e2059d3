"""Token revocation (RFC 7009), ``/oauth/revoke``.

A refresh token revokes its whole family (every access token issued from the same login goes
on the deny list) and ends the upstream token session of that login, which nothing else uses.
An access token's jti goes on the deny list until its exp; its family stays usable, since
revoking one access token is what a client does to drop a token it no longer needs.
Unknown, invalid or foreign tokens answer 200 as RFC 7009 §2.2 asks, which also keeps the
endpoint from telling anyone whether a token exists.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver.clients import ClientResolver, authenticated_client
from authproxy.authserver.ratelimit import ClientRequestLimits
from authproxy.authserver.token_families import end_token_family
from authproxy.http.cors import CrossOriginPost
from authproxy.http.errors import OAuthError
from authproxy.http.forms import OAUTH_FORM
from authproxy.http.responses import NO_STORE, set_headers
from authproxy.ops.metrics import EventCounters
from authproxy.storage import Storage
from authproxy.tokens import REFRESH_TOKEN, AccessTokenVerifier, OpaqueTokens
from authproxy.upstream.interface import IUpstreamProvider


class RevocationResource(CrossOriginPost):
    """``POST /oauth/revoke`` with ``token`` (and optional ``token_type_hint``)."""

    log = Logger()

    def __init__(
        self,
        *,
        storage: Storage,
        provider: IUpstreamProvider,
        verifier: AccessTokenVerifier,
        opaque: OpaqueTokens,
        limits: ClientRequestLimits | None = None,
        clients: ClientResolver | None = None,
        events: EventCounters | None = None,
    ) -> None:
        super().__init__()
        self.events = events or EventCounters()
        self.clients = clients or ClientResolver(storage.clients)
        self.limits = limits
        self.storage = storage
        self.provider = provider
        self.verifier = verifier  # the guard's: revocable exactly when the guard would verify it
        self.opaque = opaque

    async def handle_POST(self, request: Request) -> bytes:
        self.cors.allow(request)
        if self.limits is not None:  # shared with the token endpoint: refresh-and-revoke
            await self.limits.check_source(request, "Revocation")
        params = OAUTH_FORM.read(request)
        client_id = (await authenticated_client(self.clients, request, params)).client_id
        request.client_id = client_id  # type: ignore[attr-defined]  # the access log's
        if self.limits is not None:
            await self.limits.check_client(client_id, "Revocation")
        token = params.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        # The hint is only an optimisation (RFC 7009 §2.1); the token's form says what it is.
        if token.startswith(REFRESH_TOKEN + "_"):
            await self._revoke_refresh_token(token, client_id)
        elif token.count(".") == 2:
            await self._revoke_access_token(token, client_id)
        request.setResponseCode(200)
        set_headers(request, NO_STORE)
        return b""

    async def _revoke_refresh_token(self, token: str, client_id: str) -> None:
        token_id = self.opaque.verify(token, REFRESH_TOKEN)
        if token_id is None:
            return
        record = await self.storage.families.get_refresh_token(token_id)
        if record is None or record.client_id != client_id:
            return
        await end_token_family(self.storage.families, self.provider, record.family_id, record.tsid)
        self.events.revocations.inc("refresh_token")
        self.log.info(
            "Client {client_id} revoked a refresh token family of user {user_id}",
            client_id=client_id,
            user_id=record.user_id,
        )

    async def _revoke_access_token(self, token: str, client_id: str) -> None:
        claims = self.verifier.claims(token)
        if claims is None or claims.get("client_id") != client_id:
            return
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not isinstance(exp, int | float):
            return
        await self.storage.revocations.revoke_jti(jti, float(exp))
        self.events.revocations.inc("access_token")
        self.log.info("Client {client_id} revoked access token {jti}", client_id=client_id, jti=jti)
