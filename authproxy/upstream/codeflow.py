"""The authorization-code flow against an upstream IdP, shared by the OIDC and OAuth2 providers.

Builds the authorization redirect (always with authproxy's own PKCE S256 verifier),
exchanges the code at the token endpoint with the configured client authentication, and
refreshes through the same endpoint. When authproxy ends a login's token session (its token
family was revoked, or a replayed code or refresh token gave it away), the IdP is asked to
revoke the session's refresh token too (RFC 7009), in the background: nothing waits on the
IdP, and a failure is logged, never retried. Subclasses say where the endpoints are and how
the user's identity is established (id_token or userinfo).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import quote

import attrs
from twisted.application.service import IService
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from authproxy.config import Config, UpstreamConfig
from authproxy.http.responses import add_query
from authproxy.ops.metrics import EventCounters
from authproxy.storage.models import PendingAuthorization, UpstreamTokenSession
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.tokens import s256_challenge
from authproxy.upstream.http import ConnectionPoolService, IdPHTTP, IdPResponse, idp_http_for
from authproxy.upstream.interface import (
    UpstreamDenied,
    UpstreamError,
    UpstreamIdentity,
    UpstreamLogin,
)
from authproxy.upstream.reachability import ReachabilityProbe
from authproxy.upstream.sessions import (
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
        self,
        config: Config,
        sessions: IUpstreamSessions,
        clock: IReactorTime,
        http: IdPHTTP,
        *,
        reachability: ReachabilityProbe | None = None,
    ) -> None:
        super().__init__(config, sessions, clock)
        upstream = config.upstream
        self._http = http
        self._client_id = upstream.client_id or ""
        self._client_secret = upstream.client_secret
        self._auth_method = upstream.token_endpoint_auth_method
        self._redirect_uri = upstream.redirect_uri
        self._scope = " ".join(upstream.scopes)
        self._authorize_params = dict(upstream.authorize_params or {})
        self._configured_revocation = upstream.revocation_endpoint
        self._reachability = reachability
        self._configure(upstream)

    @classmethod
    def build(
        cls,
        config: Config,
        sessions: IUpstreamSessions,
        reactor: Any,
        http: Any,
        reachability: ReachabilityProbe | None,
    ) -> Self:
        """The provider for a validated ``config``: its ``UpstreamType.build``.

        The arguments are those of ``UpstreamTypes.build``, which documents them and
        always passes all five.
        """
        idp_http = idp_http_for(reactor, config.upstream.timeout, http)
        return cls(config, sessions, reactor, idp_http, reachability=reachability)

    def count_requests(self, events: EventCounters) -> None:
        """Count every request to the IdP in ``events`` (/metrics)."""
        self._http.events = events

    def services(self) -> list[IService]:
        """Services to attach to the application (the connection pool's closer)."""
        return [ConnectionPoolService(self._http.pool)] if self._http.pool is not None else []

    def routes(self) -> dict[str, Any]:
        """The IdP serves its own pages: nothing to mount here."""
        return {}

    # -- what subclasses provide ------------------------------------------------------------
    def _configure(self, upstream: UpstreamConfig) -> None:
        """Set up what the subclass needs from ``upstream`` (its endpoints, its discovery)."""

    def _authorization_endpoint(self) -> str:
        raise NotImplementedError

    def _token_endpoint(self) -> str:
        raise NotImplementedError

    async def _identify(self, tokens: TokenResponse, pending: PendingAuthorization) -> Identity:
        raise NotImplementedError

    def _revocation_endpoint(self) -> str | None:
        """The IdP's RFC 7009 endpoint, or None when it has none."""
        return self._configured_revocation

    def _check_callback(self, args: Mapping[str, str]) -> None:
        """Extra checks of the callback arguments (OIDC: the RFC 9207 ``iss``)."""

    # -- IUpstreamProvider --------------------------------------------------------------------
    def start_login(self, state: str) -> UpstreamLogin:
        """The IdP authorization URL for the pending authorization ``state``."""
        endpoint = self._authorization_endpoint()
        verifier = secrets.token_urlsafe(48)
        params = {
            **self._authorize_params,  # validated: none of the protocol's own
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
        if self._reachability is None:
            return succeed(None)
        return self._reachability.check(endpoint)

    async def _finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> UpstreamIdentity:
        """Exchange the callback's code, establish the identity and open a token session."""
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

    def _token_request(self, form: dict[str, str], purpose: str = "token") -> Deferred[IdPResponse]:
        return self._client_request(self._token_endpoint(), form, purpose)

    def _client_request(
        self, endpoint: str, form: dict[str, str], purpose: str
    ) -> Deferred[IdPResponse]:
        """POST ``form`` to ``endpoint`` with the client authentication of the token endpoint."""
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
        return self._http.request("POST", endpoint, headers=headers, form=form, endpoint=purpose)

    def _refresh(self, session: UpstreamTokenSession) -> Deferred[TokenResponse]:
        return ensureDeferred(self._refresh_tokens(session))

    async def _refresh_tokens(self, session: UpstreamTokenSession) -> TokenResponse:
        assert session.refresh_token is not None
        form = {"grant_type": "refresh_token", "refresh_token": session.refresh_token}
        return parse_token_response(await self._token_request(form, "refresh"))

    # -- ending a session ---------------------------------------------------------------------
    def end_session(self, tsid: str) -> Deferred[None]:
        """Forget the session's upstream tokens, then have the IdP revoke them (background)."""
        return ensureDeferred(self._end_session(tsid))

    async def _end_session(self, tsid: str) -> None:
        session = await self._sessions.get_upstream_session(tsid)
        await super().end_session(tsid)
        if session is None:
            return
        endpoint = self._revocation_endpoint()
        if endpoint is None:
            return
        # The refresh token is what outlives the session; revoking it ends the IdP's grant
        # (and with most IdPs its access tokens). Without one, the access token is all there is.
        if session.refresh_token is not None:
            token, hint = session.refresh_token, "refresh_token"
        else:
            token, hint = session.access_token, "access_token"
        revoking = self._client_request(
            endpoint, {"token": token, "token_type_hint": hint}, "revocation"
        )
        revoking.addBoth(self._revoked, hint)

    def _revoked(self, result: IdPResponse | Failure, hint: str) -> None:
        if isinstance(result, Failure):
            reason = (
                str(result.value)
                if result.check(UpstreamError)
                else getattr(result.type, "__name__", "error")
            )
            self.log.warn(
                "Upstream {upstream} did not revoke an ended session's {hint}: {reason}",
                upstream=self.name,
                hint=hint,
                reason=reason,
            )
        elif result.status != 200:
            # RFC 7009 §2.2.1: an error answer has an error code; nothing else of it is logged.
            error = safe_error_code(result.body.get("error", "")) or f"HTTP {result.status}"
            self.log.warn(
                "Upstream {upstream} refused to revoke an ended session's {hint} ({error})",
                upstream=self.name,
                hint=hint,
                error=error,
            )
        else:
            self.log.debug("Upstream {upstream} revoked an ended session's {hint}",
                           upstream=self.name, hint=hint)  # fmt: skip
