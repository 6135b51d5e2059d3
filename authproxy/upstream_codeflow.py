"""The authorization-code flow against an upstream IdP, shared by the OIDC and OAuth2 providers.

Builds the authorization redirect (always with authproxy's own PKCE S256 verifier),
exchanges the code at the token endpoint with the configured client authentication, and
refreshes through the same endpoint. Subclasses say where the endpoints are and how the
user's identity is established (id_token or userinfo).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs
from twisted.application.service import IService
from twisted.internet.defer import Deferred, ensureDeferred, fail
from twisted.internet.interfaces import IReactorTime

from authproxy.config import Config
from authproxy.httputil import add_query
from authproxy.interfaces import (
    UpstreamDenied,
    UpstreamError,
    UpstreamIdentity,
    UpstreamLogin,
)
from authproxy.storage.interface import IStorage
from authproxy.storage.models import PendingAuthorization, UpstreamTokenSession
from authproxy.tokens import s256_challenge
from authproxy.upstream_http import ConnectionPoolService, IdPHTTP, IdPResponse
from authproxy.upstream_reachability import ReachabilityProbe
from authproxy.upstream_sessions import (
    TokenEndpointError,
    TokenResponse,
    TokenSessions,
    parse_token_response,
    safe_error_code,
)


@attrs.frozen
class Identity:
    """What a provider learned about the user from the IdP."""

    subject: str
    name: str | None = None
    email: str | None = None
    claims: dict[str, object] = attrs.field(factory=dict)


class CodeFlowProvider(TokenSessions):
    """Authorization redirect, code exchange and refresh at the IdP's token endpoint."""

    #: OIDC sends and checks a nonce; plain OAuth2 servers have no use for one.
    uses_nonce = False

    def __init__(
        self, config: Config, storage: IStorage, clock: IReactorTime, http: IdPHTTP
    ) -> None:
        super().__init__(config, storage, clock)
        upstream = config.upstream
        self._http = http
        self._client_id = upstream.client_id or ""
        self._client_secret = upstream.client_secret
        self._auth_method = upstream.token_endpoint_auth_method
        self._redirect_uri = upstream.redirect_uri
        self._scope = " ".join(upstream.scopes)
        self._reachability = ReachabilityProbe(clock)

    def services(self) -> list[IService]:
        """Services to attach to the application (the connection pool's closer)."""
        return [ConnectionPoolService(self._http.pool)] if self._http.pool is not None else []

    def routes(self) -> dict[str, Any]:
        """The IdP serves its own pages: nothing to mount here."""
        return {}

    # -- what subclasses provide ------------------------------------------------------------
    def _authorization_endpoint(self) -> str:
        raise NotImplementedError

    def _token_endpoint(self) -> str:
        raise NotImplementedError

    async def _identify(self, tokens: TokenResponse, pending: PendingAuthorization) -> Identity:
        raise NotImplementedError

    def _check_callback(self, args: Mapping[str, str]) -> None:
        """Extra checks of the callback arguments (OIDC: the RFC 9207 ``iss``)."""

    # -- IUpstreamProvider --------------------------------------------------------------------
    def start_login(self, state: str) -> UpstreamLogin:
        """The IdP authorization URL for the pending authorization ``state``."""
        endpoint = self._authorization_endpoint()
        verifier = secrets.token_urlsafe(48)
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "redirect_uri": self._redirect_uri,
            "scope": self._scope,
            "state": state,
            "code_challenge": s256_challenge(verifier),
            "code_challenge_method": "S256",
        }
        nonce = ""
        if self.uses_nonce:
            nonce = params["nonce"] = secrets.token_urlsafe(24)
        return UpstreamLogin(url=add_query(endpoint, params), code_verifier=verifier, nonce=nonce)

    def check_reachable(self) -> Deferred[None]:
        """Probe the authorization endpoint's host before the browser is sent there."""
        try:
            endpoint = self._authorization_endpoint()
        except UpstreamError as e:
            return fail(e)
        return self._reachability.check(endpoint)

    def finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> Deferred[UpstreamIdentity]:
        """Exchange the callback's code, establish the identity and open a token session."""
        return ensureDeferred(self._finish_login(args, pending))

    async def _finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> UpstreamIdentity:
        if "error" in args:
            error = safe_error_code(args["error"])
            self.log.info(
                "Upstream {upstream} refused the login: {error}", upstream=self.name, error=error
            )
            raise UpstreamDenied(f"the identity provider refused the login ({error})")
        if args.get("state") != pending.state:
            raise UpstreamError("the login state does not match")
        code = args.get("code")
        if not code:
            raise UpstreamError("the identity provider returned no authorization code")
        self._check_callback(args)
        tokens = await self._exchange_code(code, pending)
        identity = await self._identify(tokens, pending)
        return await self._open_session(
            identity.subject,
            tokens,
            name=identity.name,
            email=identity.email,
            claims=identity.claims,
            id_token=tokens.id_token,
        )

    # -- the token endpoint -------------------------------------------------------------------
    async def _exchange_code(self, code: str, pending: PendingAuthorization) -> TokenResponse:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri,
        }
        # Every login starts with a verifier (start_login); without one, fail closed.
        if not pending.upstream_code_verifier:
            raise UpstreamError("the login lost its PKCE verifier; start again")
        form["code_verifier"] = pending.upstream_code_verifier
        response = await self._token_request(form)
        try:
            return parse_token_response(response)
        except TokenEndpointError as e:
            self.log.warn(
                "Upstream {upstream} refused the authorization code ({error}, HTTP {status})",
                upstream=self.name,
                error=e.error,
                status=e.status,
            )
            if e.error == "access_denied":
                raise UpstreamDenied("the identity provider refused the login") from None
            raise UpstreamError(
                f"the identity provider refused the authorization code ({e.error})"
            ) from None
        except UpstreamError as e:
            self.log.warn(
                "Upstream {upstream} token answer unusable: {reason}",
                upstream=self.name,
                reason=str(e),
            )
            raise

    def _token_request(self, form: dict[str, str]) -> Deferred[IdPResponse]:
        headers = {"Accept": "application/json"}
        form = dict(form)
        if self._client_secret is None:
            form["client_id"] = self._client_id  # public client (RFC 6749 §3.2.1)
        elif self._auth_method == "client_secret_post":
            form["client_id"] = self._client_id
            form["client_secret"] = self._client_secret.reveal()
        else:
            # RFC 6749 §2.3.1: both parts form-urlencoded before base64
            pair = (
                f"{quote(self._client_id, safe='')}:{quote(self._client_secret.reveal(), safe='')}"
            )
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return self._http.request("POST", self._token_endpoint(), headers=headers, form=form)

    def _refresh(self, session: UpstreamTokenSession) -> Deferred[TokenResponse]:
        return ensureDeferred(self._refresh_tokens(session))

    async def _refresh_tokens(self, session: UpstreamTokenSession) -> TokenResponse:
        assert session.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": session.refresh_token}
        return parse_token_response(await self._token_request(form))
