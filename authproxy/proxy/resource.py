"""The streaming reverse proxy: guard, then relay to the backend MCP server without buffering.

The backend is reached through the ``IAgent`` of backend_client.py, with its bounded pool
of keep-alive connections. The response is relayed with ``response.deliverBody``: each chunk is
written to the client as it arrives, and the backend connection is registered as the
client request's producer, so a slow client pauses the backend read (backpressure) instead
of growing a buffer. Only the wait for the response headers has a timeout; a stream may run
forever. When the client goes away the backend request is cancelled (its connection closed,
never returned to the pool half-read); when the backend dies mid-stream the client's
connection is closed without ending the response (no last chunk), so the client sees the
stream cut rather than complete.

A backend 401 is never relayed, nor any ``WWW-Authenticate`` of the backend's: the client's
authorization is with authproxy, so the backend's challenge names the wrong server and the
client would retry in vain. When the request carried the user's upstream token
(``[upstream_token]`` other than ``none``), the token is refreshed, even if it looked fresh
(at most once per session per ``FORCED_REFRESH_COOLDOWN``, upstream/sessions.py), and the
request replayed once only when backend_challenge.py says the refusal came from the
backend's auth layer before the request acted; its body is held whole before it is
forwarded (``_read_body``; bounded by ``server.max_request_body``). Otherwise the client
gets 401 ``invalid_token`` with authproxy's challenge and its retry carries the new token.
A 401 to the replay, a refreshed token refused again within the cooldown, or a refresh the
IdP refuses ends that upstream session and answers the same 401, so the client signs in
again. Without an upstream token a backend 401 is about authproxy's own
access to the backend, which the client cannot fix by signing in: it becomes a 502.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authproxy.authserver.scopes import initial_scopes
from authproxy.config import Config
from authproxy.http.cors import AllowedOriginsCORS, OriginPolicy
from authproxy.http.errors import (
    HTTPError,
    ProxyError,
    internal_error,
    method_not_allowed,
    storage_unavailable,
    write_error,
)
from authproxy.http.request import too_large_description
from authproxy.http.responses import TrustedProxies
from authproxy.ops.metrics import EventCounters
from authproxy.proxy.backend_challenge import replayable
from authproxy.proxy.backend_client import NO_BODY_STATUS, RESPONSE_DONE, BytesProducer
from authproxy.proxy.guard import BearerError, BearerGuard, Challenge, Principal
from authproxy.proxy.headers import (
    backend_request_headers,
    end_to_end,
    request_owned,
)
from authproxy.proxy.limits import BackendConnectionLimits
from authproxy.proxy.metadata import metadata_url
from authproxy.proxy.scope_rules import ScopeRules
from authproxy.proxy.sessions import MemorySessionBindings, Owner, SessionBindings
from authproxy.proxy.sse import (
    EndpointEventRewriter,
    EndpointURLMapper,
    announced_target,
    session_key,
)
from authproxy.storage.unavailable import StorageUnavailable
from authproxy.supervisor import backend_host_header
from authproxy.upstream.interface import (
    IUpstreamProvider,
    UpstreamError,
    UpstreamSessionEnded,
    UpstreamUnavailable,
)

SMALL_BODY = 64 * 1024
PROXIED_METHODS = (b"GET", b"POST", b"DELETE")
RETRY_AFTER = "5"  # seconds, when a connection or session cap refuses a request


def no_such_session() -> ProxyError:
    """Unknown, expired, ended or another user's session: all look alike."""
    return ProxyError(
        404,
        "session_not_found",
        "no such MCP session for this token; send initialize to start a new one",
    )


class SessionRefused(Exception):
    """A legacy stream announced a session that cannot be bound to its opener."""


class LegacyStream:
    """The sessions a legacy (HTTP+SSE) stream announces, bound to the user and client that
    opened it for as long as it is open.

    The legacy transport names its session in the message URL of the ``endpoint`` event;
    whoever posts to that URL speaks in the session. Each announced URL is bound (under
    ``session_key``) to the stream's owner and held in use (``enter``) by the stream, so idle
    expiry and eviction never take it while the stream is open. When the stream closes the
    binding ends at once rather than idling: a legacy session dies with its stream (the
    backend forgets it too, and a reconnecting client gets a new endpoint), so a later post
    gets 404 from authproxy instead of reaching the backend. (A backend announcing one id on
    two streams of the same user loses the binding when the first closes; legacy servers
    make a new session per stream.)
    """

    log = Logger()

    def __init__(
        self, sessions: SessionBindings, owner: Owner, mapper: EndpointURLMapper, stream_url: str
    ) -> None:
        self._sessions = sessions
        self._owner = owner
        self._mapper = mapper
        self._stream_url = stream_url
        self.keys: list[bytes] = []

    def announce(self, announced: str) -> str:
        """The rewriter's callback: map the endpoint URL and bind its session, or raise
        ``SessionRefused`` (bound to someone else, or no room in the table)."""
        public = self._mapper(announced, self._stream_url)
        key, _ = session_key(announced_target(public))
        if not (self._sessions.bind(key, self._owner) and self._sessions.enter(key, self._owner)):
            self.log.warn(
                "A legacy SSE session could not be bound (session table full, or the id is "
                "bound to another user); closing its stream"
            )
            raise SessionRefused()
        self.keys.append(key)
        return public

    def close(self) -> None:
        for key in self.keys:
            self._sessions.end(key)
        self.keys = []


class BodyRelay(Protocol):
    """Copies a backend response body to the client request as it arrives.

    ``done`` fires when the body ended (cleanly or not) and the client response was closed.
    """

    def __init__(
        self,
        request: Request,
        rewriter: EndpointEventRewriter | None,
        done: Deferred[None],
        length: int,
    ) -> None:
        self._request = request
        self._rewriter = rewriter
        self._done = done
        # The backend connection pauses while the client's socket buffer is full. A small
        # body of known length fits any socket buffer: flow control would only cost time.
        self._flow_control = not (0 <= length <= SMALL_BODY)
        self._client_gone = False
        #: Who ended the body: ``backend`` (complete), ``backend_error`` (cut), ``client``
        #: (disconnected), ``proxy`` (a legacy session that could not be bound),
        #: ``shutdown`` (ended by the graceful shutdown's grace).
        self.ended_by = "backend"

    def connectionMade(self) -> None:
        assert self.transport is not None
        if self._flow_control:
            producer: IPushProducer = self.transport  # type: ignore[assignment]
            self._request.registerProducer(producer, True)

    def dataReceived(self, data: bytes) -> None:
        if self._client_gone:
            return
        if self._rewriter is not None:
            try:
                data = self._rewriter.feed(data)
            except SessionRefused:
                # The endpoint event must not reach this client: cut the stream before it.
                self.client_gone()
                self.ended_by = "proxy"
                self._request.loseConnection()
                return
        if data:
            self._request.write(data)

    def end_stream(self) -> None:
        """Shutdown: end the client's response as complete (the last chunk, then a closed
        connection) and stop reading the backend.

        Only for event streams, where an ending between (or even inside) events is well
        formed: an MCP client then reconnects with ``Last-Event-ID`` (ops/shutdown.py).
        """
        request = self._request
        if self._client_gone or request.finished or _disconnected(request):
            return
        self.client_gone()  # no more backend data is relayed; its connection closes
        self.ended_by = "shutdown"
        if self._flow_control:
            request.unregisterProducer()
        channel = request.channel  # finish() lets go of it
        request.finish()
        # Not kept alive: the client must reconnect to a replica that is not stopping.
        channel.loseConnection()

    def client_gone(self) -> None:
        """The client disconnected: close the backend connection (it is not reusable)."""
        if not self._client_gone:  # a cut by the proxy or the shutdown also ends here: keep it
            self.ended_by = "client"
        self._client_gone = True
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = RESPONSE_DONE) -> None:
        request = self._request
        if not self._client_gone and not request.finished and not _disconnected(request):
            if self._flow_control:
                request.unregisterProducer()
            if self._rewriter is not None:
                rest = self._rewriter.flush()
                if rest:
                    request.write(rest)
            if reason.check(ResponseDone, PotentialDataLoss):
                request.finish()
            else:
                # The backend died mid-body (or sent garbage). Finishing would send the
                # terminating 0-chunk (or leave a short Content-Length body looking whole):
                # close instead, so the client sees an incomplete response and knows
                # events may be lost. What was relayed so far is still delivered.
                self.ended_by = "backend_error"
                request.loseConnection()
        if not self._done.called:
            self._done.callback(None)


def origin_form_target(uri: bytes) -> bytes | None:
    """``/path?query`` of a request target (origin-form, or absolute-form reduced to it).

    None for anything else (authority-form, asterisk-form, or garbage).
    """
    if uri.startswith(b"/"):
        return uri
    if not (uri[:7].lower() == b"http://" or uri[:8].lower() == b"https://"):
        return None
    try:
        parts = urlsplit(uri.decode("latin-1"))
    except ValueError:
        return None
    path = parts.path or "/"
    if not path.startswith("/"):
        return None
    target = path.encode("latin-1")
    if parts.query:
        target += b"?" + parts.query.encode("latin-1")
    return target


class MCPProxy(Resource):
    """Guards every request, then streams it to the backend and the answer back.

    Mounted as the fallback of the root prefix table: it serves the MCP path, the legacy
    SSE message path, and anything else the backend serves, always behind the guard.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        *,
        config: Config,
        guard: BearerGuard,
        agent: IAgent,
        clock: IReactorTime,
        provider: IUpstreamProvider | None = None,
        pool: Any = None,
        sessions: SessionBindings | None = None,
        events: EventCounters | None = None,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.events = events or EventCounters()
        backend = config.backend
        # Mcp-Session-Id belongs to streamable HTTP; the legacy SSE transport names its
        # session in the message URL its stream announces (LegacyStream).
        self._bind_sessions = backend.transport == "streamable-http"
        self._legacy_sessions = backend.transport == "sse"
        self.sessions: SessionBindings = sessions or MemorySessionBindings(
            clock,
            idle_timeout=backend.session_idle_timeout,
            max_sessions=backend.max_sessions,
            max_per_owner=backend.max_sessions_per_grant,
        )
        self.limits = BackendConnectionLimits(
            backend.max_connections, backend.max_connections_per_grant
        )
        self._full_warned_at = float("-inf")
        #: open event streams, which a graceful shutdown ends (``end_streams``)
        self.streams: set[BodyRelay] = set()
        self._backend_base = config.backend.url.rstrip("/").encode("ascii")
        self._backend_host = backend_host_header(config.backend.url)
        self._guard = guard
        self._agent = agent
        self._clock = clock
        self._provider = provider
        self._cors = AllowedOriginsCORS(
            OriginPolicy.from_config(config.server.public_url, config.server.allowed_origins),
            methods="GET, POST, DELETE",
            allow_headers="Authorization, Content-Type, Accept, Mcp-Session-Id, "
            "MCP-Protocol-Version, Last-Event-ID",
            expose_headers="Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate",
        )
        self._trusted = TrustedProxies.from_cidrs(config.server.trusted_proxies)
        self._max_body = config.server.max_request_body
        self._response_timeout = config.backend.response_timeout
        self._rewrite_endpoint = config.backend.transport == "sse"
        self._mapper = EndpointURLMapper(config.backend.url, config.server.public_url)
        self._strategy = config.upstream_token.header_strategy
        self._custom_header = config.upstream_token.custom_header.lower().encode("ascii")
        self._upstream_header = (
            b"authorization" if self._strategy == "replace" else self._custom_header
        )
        self._owned_headers = request_owned(config.upstream_token.custom_header)
        self.challenge = Challenge(
            realm=config.server.public_url,
            resource_metadata=metadata_url(config),
            scopes=initial_scopes(config),
        )
        self._scope_rules = ScopeRules.from_config(config)

    @property
    def guard(self) -> BearerGuard:
        return self._guard

    def close(self) -> Deferred[None]:
        """Close the pool's idle backend connections (when the service stops)."""
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()

    def end_streams(self) -> int:
        """End every open event stream cleanly (shutdown); how many there were."""
        streams = list(self.streams)
        for relay in streams:
            relay.end_stream()
        return len(streams)

    def render(self, request: Request) -> Any:
        d = ensureDeferred(self._handle(request))
        d.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        error = failure.value
        if isinstance(error, StorageUnavailable):  # the guard's deny-list check, a refresh
            self.log.warn("Proxying: storage unavailable ({why})", why=error)
            error = storage_unavailable(error.retry_after, for_browsers=False)
        elif not isinstance(error, HTTPError):
            self.log.failure(
                "Proxying {method} {path} failed", failure, method=request.method, path=request.path
            )
            error = internal_error()
        if not request.startedWriting:
            write_error(request, error)
        elif not request.finished:
            request.loseConnection()

    # -- the request path ---------------------------------------------------------------
    async def _handle(self, request: Request) -> None:
        request.defaultContentType = None  # type: ignore[assignment]
        origin = request.requestHeaders.getRawHeaders(b"origin", [None])[0]
        if not self._cors.permits(origin):
            raise ProxyError(403, "forbidden_origin", "this Origin is not allowed")
        if origin is not None:
            self._cors.allow(request, origin)
        method = request.method
        if method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader("Allow", "GET, POST, DELETE, OPTIONS")
            if origin is not None:
                self._cors.preflight_headers(request)
            request.finish()
            return
        if method not in PROXIED_METHODS:
            raise method_not_allowed(("GET", "POST", "DELETE"), "use GET, POST or DELETE")
        target = origin_form_target(request.uri)
        if target is None:
            # Only "/path?query" (or an absolute http(s) URL) may follow the backend's
            # base URL: ".evil.example/x" or ":8081/x" would change the host or port the
            # user's upstream token is sent to.
            raise ProxyError(400, "invalid_request", "bad request target")
        body = self._read_body(request)
        if body is None:
            raise ProxyError(413, "request_too_large", too_large_description(self._max_body))
        try:
            principal = await self._guard.authenticate(request)
            if self._scope_rules is not None:
                if method == b"POST":
                    self._scope_rules.check(request.requestHeaders, body, principal)
                elif body:
                    # Unchecked, it could reach a method-override layer as a POST.
                    raise ProxyError(
                        400,
                        "invalid_request",
                        f"a {method.decode()} request must not have a body (with scope rules, "
                        "only a POST's body is read, and any other is refused)",
                    )
        except BearerError as e:
            raise self._refused(e) from None
        request.client_id = principal.client_id  # type: ignore[attr-defined]  # the access log's
        grant: Owner = (principal.subject, principal.client_id)
        session_id = None
        if self._bind_sessions:
            sent = request.requestHeaders.getRawHeaders(b"mcp-session-id")
            if sent:
                session_id = sent[0]
                if not self.sessions.enter(session_id, grant):
                    raise no_such_session()
        elif self._legacy_sessions:
            # Only the stream's GET needs no session: any other request might be a message
            # to a session whose URL carries no session parameter.
            key, named = session_key(target)
            if named or method != b"GET":
                if not self.sessions.enter(key, grant):
                    raise no_such_session()
                session_id = key
        try:
            refused = self.limits.acquire(grant)
            if refused is not None:
                raise self._over_capacity(refused)
            try:
                await self._forward(request, method, target, body, principal, session_id)
            finally:
                self.limits.release(grant)
        finally:
            if session_id is not None:
                self.sessions.leave(session_id)

    async def _forward(
        self,
        request: Request,
        method: bytes,
        target: bytes,
        body: bytes,
        principal: Principal,
        session_id: bytes | None,
    ) -> None:
        try:
            headers = backend_request_headers(
                request.requestHeaders,
                backend_host=self._backend_host,
                peer=_peer_host(request),
                secure=request.isSecure(),
                trusted=self._trusted,
                owned=self._owned_headers,
            )
            await self._inject_upstream_token(principal, headers)
        except BearerError as e:
            raise self._refused(e) from None
        request_id = getattr(request, "request_id", None)
        if request_id is not None:
            headers.setRawHeaders(b"x-request-id", [request_id])
        if request.finished or _disconnected(request):
            return
        await self._relay(
            request, method, self._backend_base + target, headers, body, principal, session_id
        )

    def _refused(self, error: BearerError) -> BearerError:
        self.events.guard_refusals.inc(error.reason)
        return self.challenge.challenge(error)

    def _over_capacity(self, refused: str) -> ProxyError:
        if refused == "grant":
            description = (
                f"this user and client already hold {self.limits.max_per_grant} connections "
                "to the MCP server; close a stream or retry later"
            )
        else:
            description = "authproxy is at its MCP server connection limit; retry later"
            now = self._clock.seconds()
            if now - self._full_warned_at >= 60:  # once a minute, not once per refusal
                self._full_warned_at = now
                self.log.warn(
                    "Backend connection limit ({limit}) reached; answering 503",
                    limit=self.limits.max_total,
                )
        return ProxyError(503, "too_many_connections", description, retry_after=RETRY_AFTER)

    def _track_session(
        self,
        response: IResponse,
        method: bytes,
        principal: Principal,
        session_id: bytes | None,
    ) -> bool:
        """Bind a session the backend created, forget one it ended; False when a new
        session cannot be bound (then the response must not reach the client)."""
        if session_id is None:
            created = response.headers.getRawHeaders(b"mcp-session-id")
            if created:
                return self.sessions.bind(created[0], (principal.subject, principal.client_id))
        elif response.code == 404 or (method == b"DELETE" and 200 <= response.code < 300):
            self.sessions.end(session_id)
        return True

    def _read_body(self, request: Request) -> bytes | None:
        """The request body, or None when it is larger than server.max_request_body."""
        declared = request.requestHeaders.getRawHeaders(b"content-length", [None])[0]
        if declared is not None:
            try:
                if int(declared) > self._max_body:
                    return None
            except ValueError:
                return None
        content = request.content
        if content is None:
            return b""
        content.seek(0, 2)
        if content.tell() > self._max_body:
            return None
        content.seek(0)
        return content.read()

    async def _inject_upstream_token(self, principal: Principal, headers: Headers) -> None:
        if self._strategy == "none" or self._provider is None:
            return
        if principal.tsid is None:
            raise BearerError(
                401, "invalid_token", "the access token has no upstream session; sign in again"
            )
        token = await self._upstream_token(self._provider.upstream_access_token, principal.tsid)
        self._set_upstream_token(headers, token)

    async def _upstream_token(self, fetch: Any, *args: str) -> str:
        """``fetch(*args)``'s upstream token, its failures as the client's answer."""
        try:
            token: str = await fetch(*args)
        except UpstreamSessionEnded:
            raise BearerError(
                401,
                "invalid_token",
                "the upstream identity provider session has ended; sign in again",
            ) from None
        except UpstreamUnavailable as e:
            raise BearerError(
                503,
                "temporarily_unavailable",
                "the upstream identity provider is unavailable; try again later",
                headers={"Retry-After": str(max(1, int(e.retry_after)))},
            ) from None
        except UpstreamError:
            self.log.warn("Upstream token for a proxied request failed")
            raise BearerError(
                502, "upstream_error", "the upstream identity provider failed"
            ) from None
        return token

    def _set_upstream_token(self, headers: Headers, token: str) -> None:
        headers.setRawHeaders(self._upstream_header, [b"Bearer " + token.encode("latin-1")])

    async def _backend_refused(self, principal: Principal, headers: Headers, retried: bool) -> None:
        """After a backend 401: refresh the upstream token into ``headers`` for one replay, or
        end the upstream session (refused again) and ask the client to sign in again."""
        if self._strategy == "none" or self._provider is None or principal.tsid is None:
            self.log.warn("The MCP server answered 401 to a request without an upstream token")
            raise ProxyError(
                502, "bad_gateway", "the MCP server refused authproxy's request (HTTP 401)"
            )
        tsid = principal.tsid
        if not retried:
            sent = (headers.getRawHeaders(self._upstream_header) or [b""])[0]
            rejected = sent.removeprefix(b"Bearer ").decode("latin-1")
            try:
                token = await self._upstream_token(
                    self._provider.refresh_upstream_token, tsid, rejected
                )
            except BearerError as e:
                if e.status == 401:  # not refreshable: nothing more to do with this session
                    await self._provider.end_session(tsid)
                raise
            self._set_upstream_token(headers, token)
            return
        self.log.info("The MCP server refused a refreshed upstream token: session ended")
        await self._provider.end_session(tsid)
        raise BearerError(
            401,
            "invalid_token",
            "the MCP server refused the upstream identity provider's token; sign in again",
        )

    # -- the relay ------------------------------------------------------------------------
    async def _relay(
        self,
        request: Request,
        method: bytes,
        url: bytes,
        headers: Headers,
        body: bytes,
        principal: Principal,
        session_id: bytes | None,
        retried: bool = False,
    ) -> None:
        producer = BytesProducer(body) if body or method == b"POST" else None
        if self._rewrite_endpoint and method == b"GET":
            # The endpoint event must arrive readable to be rewritten.
            headers.setRawHeaders(b"accept-encoding", [b"identity"])
        pending = self._agent.request(method, url, headers, producer)
        pending.addTimeout(self._response_timeout, self._clock)
        relay: list[BodyRelay] = []
        gone: list[bool] = []

        def client_gone(_: Failure) -> None:
            gone.append(True)
            if relay:
                relay[0].client_gone()
            elif not pending.called:
                pending.cancel()

        request.notifyFinish().addErrback(client_gone)
        try:
            response: IResponse = await pending
        except defer.TimeoutError:
            self.log.warn(
                "Backend sent no response headers in time for {method} {path}",
                method=method,
                path=request.path,
            )
            raise ProxyError(
                504, "backend_timeout", "the MCP server did not answer in time"
            ) from None
        except defer.CancelledError:
            return
        except Exception as e:
            if gone:
                return
            self.log.warn(
                "Backend unreachable for {method} {path}: {why}",
                method=method,
                path=request.path,
                why=_describe(e),
            )
            raise ProxyError(502, "bad_gateway", "the MCP server is unreachable") from None
        if gone:
            # Headers arrived after the client left: drop the connection unread.
            response.deliverBody(_Discard())
            return
        if response.code == 401:
            challenges = response.headers.getRawHeaders(b"www-authenticate") or []
            response.deliverBody(_Discard())
            try:
                await self._backend_refused(principal, headers, retried)
            except BearerError as e:
                raise self._refused(e) from None
            if not replayable(method, challenges):
                # renewed for the client's own retry; this request may have been acted on
                raise self._refused(
                    BearerError(
                        401,
                        "invalid_token",
                        "the MCP server refused the upstream identity provider's token; "
                        "it was renewed: retry the request",
                    )
                )
            await self._relay(
                request, method, url, headers, body, principal, session_id, retried=True
            )
            return
        if self._bind_sessions and not self._track_session(response, method, principal, session_id):
            response.deliverBody(_Discard())
            self.log.warn(
                "A new MCP session could not be bound (session table full, or the id is bound to another user)"
            )
            raise ProxyError(
                503,
                "too_many_sessions",
                "authproxy cannot take another MCP session now; retry later",
                retry_after=RETRY_AFTER,
            )
        legacy: list[LegacyStream] = []
        rewriter, length, streaming = self._copy_response_head(
            request, response, url, method, principal, legacy
        )
        done: Deferred[None] = Deferred()
        protocol = BodyRelay(request, rewriter, done, length)
        relay.append(protocol)
        if streaming:
            self.events.open_streams.inc()
            if length < 0:  # a declared length cannot be ended early and whole
                self.streams.add(protocol)
        response.deliverBody(protocol)
        try:
            await done
        finally:
            if streaming:
                self.streams.discard(protocol)
                self.events.open_streams.dec()
                self.events.streams_ended.inc(protocol.ended_by)
            if legacy:
                legacy[0].close()

    def _copy_response_head(
        self,
        request: Request,
        response: IResponse,
        url: bytes,
        method: bytes,
        principal: Principal,
        legacy: list[LegacyStream],
    ) -> tuple[EndpointEventRewriter | None, int, bool]:
        """Status and headers to the client; returns the body rewriter, the declared
        length (-1: none, the body ends with its last chunk) and whether the body is an event
        stream. A legacy stream's sessions go into ``legacy``."""
        request.setResponseCode(response.code, response.phrase)
        for name, values in end_to_end(response.headers, _connection_listed(response)):
            request.responseHeaders.setRawHeaders(name, values)
        request.responseHeaders.removeHeader(b"www-authenticate")  # the backend's, never ours
        length = -1
        if isinstance(response.length, int) and response.code not in NO_BODY_STATUS:
            if method != b"HEAD":
                # The client parsers keep Content-Length out of response.headers.
                length = response.length
                request.setHeader(b"content-length", str(length).encode("ascii"))
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if not content_type.lower().startswith(b"text/event-stream"):
            return None, length, False
        request.setHeader(b"X-Accel-Buffering", b"no")
        rewriter = None
        if self._rewrite_endpoint and not response.headers.hasHeader(b"content-encoding"):
            stream = LegacyStream(
                self.sessions,
                (principal.subject, principal.client_id),
                self._mapper,
                url.decode("latin-1"),
            )
            legacy.append(stream)
            rewriter = EndpointEventRewriter(stream.announce)
            request.responseHeaders.removeHeader(b"content-length")
            length = -1
        # Status line and headers now, before the first event.
        request.write(b"")
        return rewriter, length, True


class _Discard(Protocol):
    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.stopProducing()  # type: ignore[attr-defined]


def _connection_listed(response: IResponse) -> frozenset[bytes]:
    """The header names the backend's ``Connection`` header lists (hop-by-hop for this hop).

    The backend client keeps them on the response; another ``IAgent`` (a test double) that
    does not is taken to list none, and only the fixed hop-by-hop set is removed.
    """
    return frozenset(getattr(response, "connection_tokens", ()))


def _disconnected(request: Request) -> bool:
    return bool(getattr(request, "_disconnected", False))


def _peer_host(request: Request) -> str | None:
    address = request.getClientAddress()
    return getattr(address, "host", None)


def _describe(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)
    if reasons:
        return ", ".join(type(r.value).__name__ for r in reasons)
    return type(error).__name__
