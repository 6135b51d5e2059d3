"""A fake MCP backend Resource for in-memory proxy tests (exposed through authproxy.testing).

It answers like an MCP server where the proxy can see it, and records what it received:

- ``POST`` (any path): a JSON echo of the request (method, path, query, headers, body),
  with an ``Mcp-Session-Id`` and a few hop-by-hop headers that a proxy must not relay;
- ``GET`` with ``Accept: text/event-stream`` (or on the legacy ``sse_path``): an SSE stream
  that stays open; the test sends events with :meth:`FakeMCPBackend.send`, ends the streams
  with :meth:`end_streams` or kills their connections with :meth:`kill_streams`. On the
  legacy path the stream starts with ``event: endpoint`` (``endpoint_chunks``, so a test can
  split it anywhere);
- ``/status/<code>``: answers that status with a JSON body (400, 404, 405 ... pass-through);
- ``DELETE``: 204 (session end).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any

import attrs
from jwcrypto.jws import JWS
from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.test import iosim
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from authproxy.config import Config, config_from_mapping
from authproxy.http.routing import PrefixTable
from authproxy.keys.ring import KeyRing, KeySet, SigningKey, generate_ephemeral_key
from authproxy.proxy.backend_client import STREAM_COALESCE, BackendAgent
from authproxy.proxy.routes import make_proxy_resource, proxy_routes
from authproxy.storage.memory import memory_storage
from authproxy.upstream.interface import IUpstreamProvider, UpstreamSessionEnded


@attrs.frozen
class ReceivedRequest:
    """One request as the backend saw it; ``headers`` maps lower-case names to value lists."""

    method: str
    path: str
    query: str
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def _headers(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, values in request.requestHeaders.getAllRawHeaders():
        out.setdefault(name.decode("latin-1").lower(), []).extend(
            v.decode("latin-1") for v in values
        )
    return out


class FakeMCPBackend(Resource):
    """The fake backend; see the module docstring."""

    isLeaf = True

    def __init__(
        self,
        sse_path: str = "/sse",
        endpoint_chunks: tuple[bytes, ...] = (
            b"event: endpoint\r\ndata: /messages/?session_id=abc123\r\n\r\n",
        ),
    ) -> None:
        super().__init__()
        self.sse_path = sse_path
        self.endpoint_chunks = endpoint_chunks
        self.received: list[ReceivedRequest] = []
        self.streams: list[Request] = []
        self.streams_lost = 0
        self.response_headers: dict[bytes, bytes] = {}
        self.session_id = b"session-1"  # the Mcp-Session-Id of every POST answer
        #: Authorization values answered 401 with the backend's own challenge
        self.refused_tokens: set[bytes] = set()
        #: that challenge (None: a 401 without one, as an application's own refusal)
        self.refusal_challenge: bytes | None = b'Bearer realm="backend", error="invalid_token"'

    @property
    def last(self) -> ReceivedRequest:
        return self.received[-1]

    def render(self, request: Request) -> Any:
        path = request.path.decode("latin-1")
        query = request.uri.partition(b"?")[2].decode("latin-1")
        assert request.content is not None
        body = request.content.read()
        self.received.append(
            ReceivedRequest(request.method.decode("ascii"), path, query, _headers(request), body)
        )
        for name, value in self.response_headers.items():
            request.setHeader(name, value)
        if request.getHeader(b"authorization") in self.refused_tokens:
            request.setResponseCode(401)
            if self.refusal_challenge is not None:
                request.setHeader(b"www-authenticate", self.refusal_challenge)
            return b"backend says no"
        if path.startswith("/status/"):
            request.setResponseCode(int(path.rsplit("/", 1)[1]))
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"status": int(path.rsplit("/", 1)[1])}).encode()
        accept = request.getHeader(b"accept") or b""
        if request.method == b"GET" and (b"text/event-stream" in accept or path == self.sse_path):
            return self._open_stream(request, legacy=path == self.sse_path)
        if request.method == b"DELETE":
            request.setResponseCode(204)
            return b""
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"mcp-session-id", self.session_id)
        request.setHeader(b"x-backend-custom", b"kept")
        # Hop-by-hop headers a proxy must drop (and one named by Connection).
        request.setHeader(b"connection", b"x-backend-hop")
        request.setHeader(b"x-backend-hop", b"dropped")
        request.setHeader(b"keep-alive", b"timeout=5")
        request.setHeader(b"proxy-authenticate", b"Basic")
        echo = {
            "method": request.method.decode("ascii"),
            "path": path,
            "query": query,
            "headers": _headers(request),
            "body": body.decode("utf-8", "replace"),
        }
        return json.dumps(echo).encode()

    def _open_stream(self, request: Request, legacy: bool) -> Any:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-cache")
        request.write(b"")
        self.streams.append(request)

        def lost(_: object) -> None:
            self.streams_lost += 1
            if request in self.streams:
                self.streams.remove(request)

        request.notifyFinish().addErrback(lost)
        if legacy:
            for chunk in self.endpoint_chunks:
                request.write(chunk)
        return NOT_DONE_YET

    def send(self, data: bytes) -> None:
        """Write raw bytes to every open stream."""
        for request in list(self.streams):
            request.write(data)

    def send_event(self, data: str, event: str | None = None) -> None:
        """Write one SSE event to every open stream."""
        head = f"event: {event}\n" if event else ""
        self.send(f"{head}data: {data}\n\n".encode())

    def end_streams(self) -> None:
        """Finish every open stream cleanly."""
        for request in list(self.streams):
            self.streams.remove(request)
            request.finish()

    def kill_streams(self) -> None:
        """Drop every open stream's connection mid-body, as a crashing server would."""
        for request in list(self.streams):
            self.streams.remove(request)
            transport: Any = request.channel.transport
            transport.abortConnection()


# -- an in-memory harness: StubTreq -> proxy -> BackendAgent -> SiteEndpoint -> FakeMCPBackend ---


def make_test_ring() -> KeyRing:
    """A KeyRing with one ephemeral ES256 key and a random HMAC secret."""
    return KeyRing(
        KeySet(signing_keys=(generate_ephemeral_key(),), hmac_secrets=(secrets.token_bytes(32),))
    )


def mint_token(
    key: SigningKey,
    claims: dict[str, Any],
    *,
    alg: str | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    """Sign ``claims`` as an RFC 9068 access token with ``key`` (header overridable)."""
    protected = {"alg": alg or key.alg, "kid": key.kid, "typ": "at+jwt", **(header or {})}
    jws = JWS(json.dumps(claims).encode())
    jws.add_signature(key.jwk, alg=protected["alg"], protected=json.dumps(protected))
    return str(jws.serialize(compact=True))


@implementer(IUpstreamProvider)
class FakeUpstreamTokens:
    """An IUpstreamProvider that only answers ``upstream_access_token`` (per-tsid outcomes)."""

    name = "fake"

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.failures: dict[str, Exception] = {}
        self.calls: list[str] = []
        #: tsid -> the token a forced refresh yields (absent: the refresh ends the session)
        self.refreshed: dict[str, str] = {}
        self.refreshes: list[tuple[str, str]] = []  # (tsid, rejected token)
        self.ended: list[str] = []

    def upstream_access_token(self, tsid: str) -> Deferred[str]:
        self.calls.append(tsid)
        if tsid in self.failures:
            return fail(self.failures[tsid])
        if tsid not in self.tokens:
            return fail(UpstreamSessionEnded("no such session"))
        return succeed(self.tokens[tsid])

    def refresh_upstream_token(self, tsid: str, rejected: str) -> Deferred[str]:
        self.refreshes.append((tsid, rejected))
        if tsid not in self.refreshed:
            return fail(UpstreamSessionEnded("the refresh was refused"))
        self.tokens[tsid] = self.refreshed.pop(tsid)
        return succeed(self.tokens[tsid])

    def check_reachable(self) -> Deferred[None]:
        return succeed(None)

    def start_login(self, state: str) -> Any:
        raise NotImplementedError

    def finish_login(self, args: Any, pending: Any) -> Any:
        raise NotImplementedError

    def end_session(self, tsid: str) -> Deferred[None]:
        self.tokens.pop(tsid, None)
        self.ended.append(tsid)
        return succeed(None)

    def readiness(self) -> tuple[bool, str]:
        return True, "fake"

    def routes(self) -> dict[str, Any]:
        return {}


DEFAULT_CONFIG: dict[str, Any] = {
    "server": {"public_url": "https://mcp.example.com"},
    "backend": {"url": "http://127.0.0.1:9000"},
    "upstream": {"type": "development"},
}


def proxy_config(**sections: dict[str, Any]) -> Config:
    """DEFAULT_CONFIG with the given sections merged in, validated."""
    data: dict[str, Any] = {name: dict(values) for name, values in DEFAULT_CONFIG.items()}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return config_from_mapping(data, environ={})


class SiteEndpoint:
    """A client endpoint whose connections reach ``resource`` through an in-memory Site.

    The proxy's own backend client connects through it, so tests exercise the real client;
    :meth:`pump` moves the bytes waiting on every connection.
    """

    _server_address = IPv4Address("TCP", "127.0.0.1", 9000)
    _client_address = IPv4Address("TCP", "127.0.0.1", 31337)

    def __init__(self, resource: Resource) -> None:
        self._site = Site(resource, reactor=MemoryReactorClock())
        self.pumps: list[iosim.IOPump] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        server = self._site.buildProtocol(self._client_address)
        client = factory.buildProtocol(self._server_address)
        server_io = iosim.FakeTransport(
            server,
            isServer=True,
            hostAddress=self._server_address,
            peerAddress=self._client_address,
        )
        client_io = iosim.FakeTransport(
            client,
            isServer=False,
            hostAddress=self._client_address,
            peerAddress=self._server_address,
        )
        self.pumps.append(iosim.connect(server, server_io, client, client_io, greet=False))
        return succeed(client)

    def pump(self) -> bool:
        """Move the bytes (and closes) waiting on every connection once; True if any moved."""
        moved = False
        for pump in list(self.pumps):
            moved = pump.pump() or moved
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self.pumps.remove(pump)
        return moved


#: How many rounds ``ProxyHarness.flush`` may take before it gives up on getting quiet.
MAX_FLUSH_ROUNDS = 1000


class ProxyHarness:
    """The proxy in memory: ``client`` (StubTreq) in front, ``backend`` (FakeMCPBackend) behind.

    ``clock`` drives token expiry and the response-header timeout; call ``flush()`` after
    backend writes so bytes travel through both in-memory connections.
    """

    def __init__(
        self,
        config: Config | None = None,
        backend: FakeMCPBackend | None = None,
        agent: IAgent | None = None,
        upstream: Callable[[ProxyHarness], IUpstreamProvider] | None = None,
    ) -> None:
        self.config = config or proxy_config()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.ring = make_test_ring()
        self.storage = memory_storage(self.clock)
        self.provider = FakeUpstreamTokens()
        self.provider.tokens["tsid-1"] = "upstream-token-1"
        sse_path = self.config.backend.path if self.config.backend.transport == "sse" else "/sse"
        self.backend = backend or FakeMCPBackend(sse_path=sse_path)
        self.backend_endpoint = SiteEndpoint(self.backend)
        # The backend client's own clock: its stream batching waits are run by flush(), and
        # the tests' clock (token expiry, the response-header timeout) stays theirs.
        self.backend_clock = MemoryReactorClock()
        self.backend_agent = BackendAgent(
            self.backend_clock, self.config.backend.url, endpoint=self.backend_endpoint
        )
        self.proxy = make_proxy_resource(
            self.config,
            self.ring,
            self.storage.revocations,
            upstream(self) if upstream else self.provider,
            self.clock,
            agent=agent or self.backend_agent,
        )
        self.root = PrefixTable(fallback=self.proxy)
        self.root.mount_all(proxy_routes(self.config))
        self.client: Any = StubTreq(self.root)

    @property
    def public_url(self) -> str:
        return self.config.server.public_url

    @property
    def resource(self) -> str:
        return self.config.auth_server.allowed_audiences[0]

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(self.clock.seconds())
        claims: dict[str, Any] = {
            "iss": self.config.auth_server.issuer,
            "sub": "user-1",
            "aud": self.resource,
            "exp": now + 900,
            "iat": now,
            "jti": secrets.token_urlsafe(8),
            "client_id": "client-1",
            "scope": "openid profile",
            "scp": ["openid", "profile"],
            "tsid": "tsid-1",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, **overrides: Any) -> str:
        """A valid access token signed by the ring's active key (claims overridable)."""
        return mint_token(self.ring.active_signing_key, self.claims(**overrides))

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token()}"}

    def flush(self) -> None:
        """Move bytes through both in-memory connections until none are left to move.

        The backend client's stream batching waits (``STREAM_COALESCE``) are run as they
        come due; ``AssertionError`` if the connections never get quiet.
        """
        for _ in range(MAX_FLUSH_ROUNDS):
            self.client.flush()  # treq pumps the client's connection until it is quiet
            if self.backend_endpoint.pump():
                continue
            batching = [
                c
                for c in self.backend_clock.getDelayedCalls()
                if c.getTime() <= (self.backend_clock.seconds() + STREAM_COALESCE)
            ]
            if not batching:
                return
            self.backend_clock.advance(STREAM_COALESCE)
        raise AssertionError(f"still not quiet after {MAX_FLUSH_ROUNDS} rounds")
