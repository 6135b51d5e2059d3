"""Upstream token sessions: the IdP's tokens kept under a tsid, refreshed on demand, one at a time.

Every provider type (OIDC, OAuth2, development) stores its tokens through ``TokenSessions``;
they differ only in how a login is completed and how a refresh is obtained (``_refresh``).
A refresh is single-flight in this process (``SingleFlight``) and across replicas (the
storage's refresh lock, ``IUpstreamSessions.lock_refresh``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger

from authproxy.config import Config
from authproxy.storage.models import PendingAuthorization, UpstreamTokenSession
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.upstream.http import IdPResponse
from authproxy.upstream.interface import (
    UpstreamError,
    UpstreamIdentity,
    UpstreamSessionEnded,
    UpstreamUnavailable,
)
from authproxy.upstream.single_flight import SingleFlight

#: Lifetime assumed for an access token whose response has no expires_in.
DEFAULT_EXPIRES_IN = 3600.0
#: Refresh this long before the upstream access token expires, so it does not expire in flight.
REFRESH_MARGIN = 30.0
MAX_CACHED_TOKENS = 100_000
#: A backend that refuses a token forces a refresh at most once per session in this window;
#: the token that refresh yields refused again within it ends the session (review 2 F1).
FORCED_REFRESH_COOLDOWN = 30.0
#: A replica waiting for another's refresh re-reads the session after these many seconds,
#: doubling up to the max, until the token is fresh or the holder's lock expired.
LOCK_POLL_START = 0.05
LOCK_POLL_MAX = 1.0
#: Token-endpoint errors meaning the refresh token is dead (GitHub says bad_refresh_token).
SESSION_ENDING_ERRORS = frozenset({"invalid_grant", "bad_refresh_token"})

_SAFE_CODE = re.compile(r"[^A-Za-z0-9_.\-]")


def safe_error_code(value: object) -> str:
    """An IdP error code reduced to characters that are safe to log and show."""
    return _SAFE_CODE.sub("", str(value))[:64] or "unknown_error"


@attrs.frozen(repr=False)
class TokenResponse:
    """A successful token-endpoint answer (RFC 6749 §5.1)."""

    access_token: str
    token_type: str
    expires_in: float
    refresh_token: str | None = None
    id_token: str | None = None
    scope: str | None = None

    def __repr__(self) -> str:
        return f"TokenResponse(token_type={self.token_type!r}, expires_in={self.expires_in})"


class TokenEndpointError(UpstreamError):
    """The token endpoint answered an OAuth error (``error`` is sanitised, safe to log)."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(f"the identity provider answered {error}")
        self.error = error
        self.status = status


def _expires_in(value: object) -> float:
    # form-encoded answers carry numbers as strings
    if isinstance(value, bool):
        return DEFAULT_EXPIRES_IN
    try:
        seconds = float(cast(Any, value))
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    return seconds if seconds > 0 else DEFAULT_EXPIRES_IN


def parse_token_response(response: IdPResponse) -> TokenResponse:
    """Check a token-endpoint answer; raises TokenEndpointError or UpstreamError."""
    body = response.body
    # GitHub answers some errors with 200 and an error member
    if "error" in body or not 200 <= response.status < 300:
        raise TokenEndpointError(
            safe_error_code(body.get("error") or f"http_{response.status}"), response.status
        )
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise UpstreamError("the identity provider's token answer has no access_token")
    token_type = body.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise UpstreamError("the identity provider issued a token that is not a Bearer token")
    refresh_token = body.get("refresh_token")
    id_token = body.get("id_token")
    scope = body.get("scope")
    return TokenResponse(
        access_token=access_token,
        token_type=token_type,
        expires_in=_expires_in(body.get("expires_in")),
        refresh_token=refresh_token if isinstance(refresh_token, str) and refresh_token else None,
        id_token=id_token if isinstance(id_token, str) and id_token else None,
        scope=scope if isinstance(scope, str) else None,
    )


class TokenSessions:
    """Stores upstream tokens under new tsids and hands out fresh access tokens.

    Subclasses implement ``_refresh(session) -> Deferred[TokenResponse]``.
    """

    log = Logger()

    def __init__(self, config: Config, sessions: IUpstreamSessions, clock: IReactorTime) -> None:
        self.name = config.upstream.name
        self._sessions = sessions
        self._clock = clock
        # authproxy's refresh tokens live this long, so the upstream tokens must too
        self._session_lifespan = config.auth_server.refresh_token_lifespan
        self._refreshes: SingleFlight[str] = SingleFlight()  # keyed by tsid
        # tsid -> (access token, fresh until): the proxy asks on every request, and a
        # storage read (a copy of the whole session) per request is the dominant cost.
        # Only this object renews or ends sessions, so it can keep this view exact.
        self._fresh_tokens: dict[str, tuple[str, float]] = {}
        # tsid -> (the token a backend refusal's refresh yielded, when): one such refresh
        # per session per FORCED_REFRESH_COOLDOWN, on this replica
        self._forced: dict[str, tuple[str, float]] = {}
        # the refresh lock outlives one refresh request (bounded by the upstream timeout)
        self._lock_ttl = float(config.upstream.timeout) + 5.0

    def _now(self) -> float:
        return cast(Any, self._clock).seconds()

    def finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> Deferred[UpstreamIdentity]:
        """Complete the login the callback's ``args`` report for ``pending``."""
        return ensureDeferred(self._finish_login(args, pending))

    async def _finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> UpstreamIdentity:
        raise NotImplementedError

    async def _open_session(
        self,
        subject: str,
        tokens: TokenResponse,
        *,
        name: str | None,
        email: str | None,
        claims: dict[str, object],
        id_token: str | None = None,
    ) -> UpstreamIdentity:
        now = self._now()
        session = UpstreamTokenSession(
            tsid=secrets.token_urlsafe(32),
            upstream_name=self.name,
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            access_token_expires_at=now + tokens.expires_in,
            expires_at=now + self._session_lifespan,
            subject=subject,
            claims=claims,
            id_token=id_token,
        )
        await self._sessions.put_upstream_session(session)
        self.log.info(
            "Upstream {upstream} login completed (refresh token: {refreshable})",
            upstream=self.name,
            refreshable=tokens.refresh_token is not None,
        )
        verified, username = claims.get("email_verified"), claims.get("preferred_username")
        return UpstreamIdentity(
            subject=subject,
            tsid=session.tsid,
            name=name,
            email=email,
            email_verified=verified if isinstance(verified, bool) else None,
            preferred_username=username if isinstance(username, str) and username else None,
        )

    def _fresh(self, session: UpstreamTokenSession, rejected: str | None = None) -> bool:
        """Usable as it is: not (nearly) expired, and not the token the backend refused."""
        if rejected is not None and session.access_token == rejected:
            return False
        return session.access_token_expires_at - REFRESH_MARGIN > self._now()

    def upstream_access_token(self, tsid: str) -> Deferred[str]:
        """A valid upstream access token for ``tsid``, refreshed first when (nearly) expired."""
        cached = self._fresh_tokens.get(tsid)
        if cached is not None and cached[1] > self._now():
            return succeed(cached[0])
        return ensureDeferred(self._access_token(tsid))

    def refresh_upstream_token(self, tsid: str, rejected: str) -> Deferred[str]:
        """A new access token for ``tsid``: the backend refused ``rejected`` before it expired
        (the IdP revoked it, or the backend's clock disagrees).

        At most one IdP refresh per session per ``FORCED_REFRESH_COOLDOWN``: when
        ``rejected`` is the token such a refresh yielded within it, the backend refuses fresh
        tokens too and refreshing again would only load the IdP, so the session ends
        (``UpstreamSessionEnded``)."""
        self._fresh_tokens.pop(tsid, None)
        forced = self._forced.get(tsid)
        if forced is not None and forced[0] == rejected:
            if self._now() - forced[1] < FORCED_REFRESH_COOLDOWN:
                return ensureDeferred(self._refused_again(tsid))
        return ensureDeferred(self._forced_refresh(tsid, rejected))

    async def _forced_refresh(self, tsid: str, rejected: str) -> str:
        token = await self._access_token(tsid, rejected)
        if self._forced.get(tsid, ("",))[0] != token:  # another request's refresh keeps its time
            if len(self._forced) >= MAX_CACHED_TOKENS:
                self._forced.clear()  # rare; only lets one more refresh through per session
            self._forced[tsid] = (token, self._now())
        return token

    async def _refused_again(self, tsid: str) -> str:
        self.log.info(
            "The MCP server refused a just-refreshed {upstream} token: session ended",
            upstream=self.name,
        )
        await self.end_session(tsid)
        raise UpstreamSessionEnded("the MCP server refused a just-refreshed upstream token")

    def _remember(self, session: UpstreamTokenSession) -> str:
        if len(self._fresh_tokens) >= MAX_CACHED_TOKENS:
            self._fresh_tokens.clear()  # rare; the next requests re-read storage
        until = min(session.access_token_expires_at - REFRESH_MARGIN, session.expires_at)
        self._fresh_tokens[session.tsid] = (session.access_token, until)
        return session.access_token

    async def _access_token(self, tsid: str, rejected: str | None = None) -> str:
        self._fresh_tokens.pop(tsid, None)
        session = await self._sessions.get_upstream_session(tsid)
        if session is None:
            raise UpstreamSessionEnded("the upstream login session has ended")
        if self._fresh(session, rejected):
            return self._remember(session)
        return await self._refreshes.run(lambda: self._refresh_session(tsid, rejected), tsid)

    async def _refresh_session(self, tsid: str, rejected: str | None = None) -> str:
        """Refresh under the storage's refresh lock, or use what the replica holding it
        stores: one refresh per session across replicas (IdPs that rotate refresh tokens
        would end the session on a second refresh with the same token)."""
        waited = 0.0
        delay = LOCK_POLL_START
        while True:
            lock = await self._sessions.lock_refresh(tsid, self._lock_ttl)
            if lock is not None:
                try:
                    return await self._refresh_locked(tsid, rejected)
                finally:
                    await self._sessions.unlock_refresh(tsid, lock)
            if waited > self._lock_ttl:  # the lock frees itself after its TTL: not reached
                raise UpstreamUnavailable("another replica's upstream refresh did not finish", 5)
            await deferLater(self._clock, delay)
            waited += delay
            delay = min(delay * 2, LOCK_POLL_MAX)
            session = await self._sessions.get_upstream_session(tsid)
            if session is None:
                raise UpstreamSessionEnded("the upstream login session has ended")
            if self._fresh(session, rejected):  # the other replica stored its refreshed token
                return self._remember(session)

    async def _refresh_locked(self, tsid: str, rejected: str | None = None) -> str:
        # re-read: a refresh that finished while our caller read storage (here or on another
        # replica) may have renewed it
        session = await self._sessions.get_upstream_session(tsid)
        if session is None:
            raise UpstreamSessionEnded("the upstream login session has ended")
        if self._fresh(session, rejected):
            return self._remember(session)
        if session.refresh_token is None:
            raise UpstreamSessionEnded(
                "the upstream access token expired and the identity provider gave no refresh token"
            )
        try:
            tokens = await self._refresh(session)
        except TokenEndpointError as e:
            if e.error in SESSION_ENDING_ERRORS:
                self._fresh_tokens.pop(tsid, None)
                await self._sessions.delete_upstream_session(tsid)
                self.log.info(
                    "Upstream {upstream} refused the refresh ({error}): session ended",
                    upstream=self.name,
                    error=e.error,
                )
                raise UpstreamSessionEnded(
                    "the identity provider ended the login session"
                ) from None
            self.log.error(
                "Upstream {upstream} refused the refresh ({error}, HTTP {status})",
                upstream=self.name,
                error=e.error,
                status=e.status,
            )
            raise UpstreamUnavailable("the identity provider refused the refresh", 30) from None
        except UpstreamUnavailable as e:
            self.log.warn(
                "Upstream {upstream} refresh failed: {reason}", upstream=self.name, reason=str(e)
            )
            raise
        except UpstreamError as e:
            self.log.error(
                "Upstream {upstream} refresh failed: {reason}", upstream=self.name, reason=str(e)
            )
            raise UpstreamUnavailable(str(e), 30) from None
        now = self._now()
        renewed = attrs.evolve(
            session,
            access_token=tokens.access_token,
            # an IdP that does not rotate refresh tokens omits it: keep ours
            refresh_token=tokens.refresh_token or session.refresh_token,
            access_token_expires_at=now + tokens.expires_in,
            expires_at=max(session.expires_at, now + self._session_lifespan),
        )
        await self._sessions.put_upstream_session(renewed)
        self.log.debug("Upstream {upstream} access token refreshed", upstream=self.name)
        return self._remember(renewed)

    def _refresh(self, session: UpstreamTokenSession) -> Deferred[TokenResponse]:
        raise NotImplementedError

    def end_session(self, tsid: str) -> Deferred[None]:
        """Forget the session's upstream tokens."""
        self._fresh_tokens.pop(tsid, None)
        self._forced.pop(tsid, None)
        return self._sessions.delete_upstream_session(tsid)
