"""Property-based fuzzing of every endpoint: hostile bytes get an answer, never a 5xx or a traceback.

Raw HTTP/1.1 requests (arbitrary methods, header bytes including non-UTF-8 and control
characters, query strings, form/JSON/garbage bodies) go through a real Site and HTTPChannel
over an in-memory transport. Two sites are driven:

* the whole application as ``build_application`` wires it (authorization server, metadata,
  JWKS, /health, /ready, /metrics, the proxy), on a MemoryReactorClock where the backend is
  unreachable: the MCP path may answer 502/503/504, nothing else may be a 5xx;
* the proxy in front of an in-memory MCP backend that answers (ProxyHarness), with valid,
  altered and missing tokens: no 5xx at all.

Bounded and derandomized, so CI runs the same examples every time, in a few seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.application import build_application
from authproxy.config import config_from_mapping
from authproxy.http.site import AuthproxySite
from authproxy.storage.models import RegisteredClient
from authproxy.testing.backend import ProxyHarness, mint_token

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

CLIENT_ID = "fuzz-client"
REDIRECT_URI = "http://127.0.0.1:33418/callback"

AUTH_PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/.well-known/jwks.json",
    "/oauth/register",
    "/oauth/authorize",
    "/oauth/callback",
    "/oauth/consent",
    "/oauth/token",
    "/oauth/revoke",
    "/oauth/userinfo",
    "/health",
    "/ready",
    "/metrics",
]
MCP_PATHS = ["/mcp", "/mcp/", "/sse", "/messages", "/elsewhere"]
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"HEAD", b"PATCH"]
HEADER_NAMES = [
    b"Content-Type",
    b"Authorization",
    b"Origin",
    b"Access-Control-Request-Headers",
    b"Access-Control-Request-Method",
    b"Cookie",
    b"X-Forwarded-For",
    b"Forwarded",
    b"X-Real-IP",
    b"Accept",
    b"Mcp-Session-Id",
    b"MCP-Protocol-Version",
    b"Last-Event-ID",
    b"If-None-Match",
    b"Referer",
    b"User-Agent",
    b"Mcp-Method",
    b"Mcp-Name",
    b"X-Request-Id",
    b"Host",
]
PARAM_NAMES = [
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
    "resource",
    "prompt",
    "nonce",
    "grant_type",
    "code",
    "code_verifier",
    "refresh_token",
    "token",
    "token_type_hint",
    "csrf_token",
    "decision",
    "error",
    "session_id",
    "access_token",
]
CONTENT_TYPES = [
    b"application/json",
    b"application/x-www-form-urlencoded",
    b"application/x-www-form-urlencoded; charset=utf-8",
    b"text/plain",
    b"multipart/form-data; boundary=x",
    b"application/json; charset=\xff",
    b"\xff\xfe",
]

# Header values: any bytes but CR and LF (which end the header line).
header_value = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
header_name = st.one_of(
    st.sampled_from(HEADER_NAMES),
    st.text("abcdefghijklmnopqrstuvwxyz-_", min_size=1, max_size=12).map(str.encode),
)
param_value = st.one_of(
    st.sampled_from([CLIENT_ID, REDIRECT_URI, "code", "S256", "plain", "none", "", "openid"]),
    st.text(max_size=40),
)
params = st.dictionaries(
    st.one_of(st.sampled_from(PARAM_NAMES), st.text(max_size=8)), param_value, max_size=6
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
registration = st.fixed_dictionaries(
    {},
    optional={
        "redirect_uris": st.one_of(st.just([REDIRECT_URI]), json_value),
        # a lone surrogate once registered and then broke every authorize of the client
        "client_name": st.one_of(json_value, st.just("a \ud800")),
        "grant_types": json_value,
        "response_types": json_value,
        "token_endpoint_auth_method": json_value,
        "scope": json_value,
        "logo_uri": json_value,
        "client_uri": json_value,
        "contacts": json_value,
    },
)
body = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    params.map(lambda p: urlencode(p).encode()),
    json_value.map(lambda v: json.dumps(v).encode()),
    registration.map(lambda v: json.dumps(v).encode()),
)
# Known methods mostly; sometimes anything a client could type.
methods = st.one_of(
    st.sampled_from(METHODS), st.sampled_from(METHODS), st.binary(min_size=1, max_size=8)
)
query = st.one_of(
    st.just(b""),
    params.map(lambda p: b"?" + urlencode(p).encode()),
    st.binary(max_size=60).map(lambda b: b"?" + quote(b, safe="=&%").encode()),
    # raw bytes in the request target, as a hostile client may send them
    st.binary(max_size=30).map(
        lambda b: b"?" + bytes(c for c in b if c > 0x20 and c not in (0x7F, 0x23))
    ),
)


def raw_request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    content: bytes,
    content_type: bytes | None,
) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1:8080"]
    if content_type is not None:
        lines.append(b"Content-Type: " + content_type)
    lines.extend(name + b": " + value for name, value in headers)
    lines.append(b"Content-Length: " + str(len(content)).encode())
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + content


class TracebackCapture:
    """Every logged traceback (an event with ``log_failure``) while the test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.failures: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        case.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            self.failures.append(event)


def exchange(site: AuthproxySite, raw: bytes, pump: Callable[[], None]) -> bytes:
    """Send ``raw`` on a fresh connection from 127.0.0.1 and return what came back."""
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    transport = StringTransport(peerAddress=peer, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    protocol = site.buildProtocol(peer)
    assert protocol is not None
    protocol.makeConnection(transport)
    protocol.dataReceived(raw)
    for _ in range(40):
        if transport.disconnecting or b"\r\n\r\n" in transport.value():
            pump()  # let a streamed body finish, then stop
            break
        pump()
    protocol.connectionLost(Failure(ConnectionDone()))
    return transport.value()


def status_of(response: bytes) -> int:
    first = response.split(b"\r\n", 1)[0].split(b" ")
    if len(first) < 2 or not first[0].startswith(b"HTTP/1."):
        raise AssertionError(f"no HTTP response: {response[:200]!r}")
    return int(first[1])


class WholeApplicationFuzzTests(SynchronousTestCase):
    """Every endpoint of the wired application; the backend is unreachable."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(1_700_000_000)
        config = config_from_mapping(
            {
                "server": {"public_url": "http://127.0.0.1:8080"},
                "backend": {"url": "http://127.0.0.1:9", "connect_timeout": "1s"},
                "upstream": {"type": "development"},
                "auth_server": {"consent": "always"},
                # no upstream token to fetch: a valid token goes straight to the backend
                "upstream_token": {"header_strategy": "none"},
                # proxied POST bodies are then read as JSON-RPC and matched (scope_rules.py)
                "proxy": {"scope_rules": [{"method": "tools/call", "scopes": ["mcp:admin"]}]},
            },
            environ={},
        )
        self.app = build_application(config, self.reactor)
        # a known client_id, so authorize, consent and token get past the client lookup
        self.successResultOf(self.app.storage.clients.add_client(_client(self.reactor.seconds())))
        self.token = self.app_token(config)
        self.tracebacks = TracebackCapture(self)

    def app_token(self, config: Any) -> str:
        now = int(self.reactor.seconds())
        claims = {
            "iss": config.auth_server.issuer,
            "sub": "user-1",
            "aud": config.auth_server.allowed_audiences[0],
            "exp": now + 86400,
            "iat": now,
            "jti": "fuzz-jti",
            "client_id": CLIENT_ID,
            "scope": "openid",
            "tsid": "tsid-1",
        }
        return mint_token(self.app.ring.active_signing_key, claims)

    def pump(self) -> None:
        # The memory reactor never completes a connection: refuse each attempt, as an
        # unreachable backend would.
        while self.reactor.tcpClients:
            factory = self.reactor.tcpClients.pop(0)[2]
            connector = self.reactor.connectors.pop(0)
            factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        self.reactor.advance(0.5)

    def check(self, raw: bytes, path: str) -> None:
        response = exchange(self.app.site, raw, self.pump)
        code = status_of(response)
        proxied = not any(path.startswith(p) for p in AUTH_PATHS)
        allowed = {502, 503, 504} if proxied else set()
        self.assertFalse(code >= 500 and code not in allowed, (code, raw, response[:400]))
        self.assertEqual(self.tracebacks.failures, [], raw)

    def fuzz(
        self,
        path: str,
        method: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        content_type: bytes | None,
        content: bytes,
        with_token: bool,
    ) -> None:
        method = bytes(c for c in method if 0x21 <= c < 0x7F) or b"GET"
        if with_token:  # a valid access token: the proxy then tries the unreachable backend
            headers = [(b"Authorization", b"Bearer " + self.token.encode()), *headers]
        raw = raw_request(method, path.encode() + query, headers, content, content_type)
        self.check(raw, path)


def _fuzz_test(path: str) -> Callable[..., None]:
    @FUZZ
    @given(
        method=methods,
        query=query,
        headers=st.lists(st.tuples(header_name, header_value), max_size=5),
        content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES), header_value),
        content=body,
        with_token=st.booleans(),
    )
    def test(self: WholeApplicationFuzzTests, **example: Any) -> None:
        self.fuzz(path, **example)

    test.__doc__ = f"{path}: no 5xx (but the proxy's 502/503/504), no logged traceback."
    return test


# One test per endpoint, each with its own example budget.
for _path in AUTH_PATHS + MCP_PATHS:
    _name = "test" + "".join(c if c.isalnum() else "_" for c in _path)
    setattr(WholeApplicationFuzzTests, _name, _fuzz_test(_path))


def _client(now: float) -> RegisteredClient:
    return RegisteredClient(
        client_id=CLIENT_ID,
        redirect_uris=(REDIRECT_URI,),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        scopes=("openid", "profile", "email", "offline_access"),
        client_name="Fuzz",
        token_endpoint_auth_method="none",
        created_at=now,
    )


class ProxyFuzzTests(SynchronousTestCase):
    """The MCP path in front of a backend that answers: tokens valid, altered or missing."""

    def setUp(self) -> None:
        self.h = ProxyHarness()
        self.site = AuthproxySite(self.h.root, reactor=self.h.clock)
        self.site.displayTracebacks = False
        self.tokens = [
            self.h.token(),
            self.h.token(aud=[{}]),
            self.h.token(exp=10**30),
            self.h.token(scp=[{}], scope=5),
            self.h.token(tsid="unknown"),
        ]
        self.tracebacks = TracebackCapture(self)

    def pump(self) -> None:
        self.h.flush()
        self.h.clock.advance(0.5)

    @FUZZ
    @given(
        method=methods,
        path=st.sampled_from(["/mcp", "/mcp?x=1", "/sse", "/elsewhere"]),
        token=st.one_of(st.none(), st.integers(0, 4), header_value),
        mutate=st.sampled_from(["", "=", "x", ".", " extra"]),
        headers=st.lists(st.tuples(header_name, header_value), max_size=4),
        content_type=st.one_of(st.none(), st.sampled_from(CONTENT_TYPES)),
        content=body,
    )
    def test_mcp_path(
        self,
        method: bytes,
        path: str,
        token: int | bytes | None,
        mutate: str,
        headers: list[tuple[bytes, bytes]],
        content_type: bytes | None,
        content: bytes,
    ) -> None:
        method = bytes(c for c in method if 0x21 <= c < 0x7F) or b"GET"
        if isinstance(token, int):
            bearer = b"Bearer " + (self.tokens[token] + mutate).encode()
            headers = [(b"Authorization", bearer), *headers]
        elif isinstance(token, bytes):
            headers = [(b"Authorization", token), *headers]
        raw = raw_request(method, path.encode(), headers, content, content_type)
        response = exchange(self.site, raw, self.pump)
        code = status_of(response)
        self.assertLess(code, 500, (raw, response[:400]))
        self.assertEqual(self.tracebacks.failures, [], raw)
