"""The proxy on a real loopback port in front of a real MCP server (the ``mcp`` SDK).

The proxy runs in-process on the real reactor; the MCP server is a subprocess
(tests/e2e/mcp_server.py); the clients (the SDK's, or plain httpx2 for the failure cases) run
in a thread. Assertions are about order and outcome, never about time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.protocols.policies import WrappingFactory
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.server import Site

from authproxy.config import config_from_mapping
from authproxy.http.routing import PrefixTable
from authproxy.proxy import make_proxy_resource, make_request_factory, proxy_routes
from authproxy.storage.memory import memory_storage
from authproxy.testing.backend import FakeUpstreamTokens, make_test_ring, mint_token

try:
    from tests.processes import MCPServerProcess, start_mcp_server
except ImportError:  # pragma: no cover
    start_mcp_server = None  # type: ignore[assignment]

ACCEPT = "application/json, text/event-stream"


def established_to(port: int) -> int:
    """Established TCP connections (any process) whose remote end is 127.0.0.1:``port``."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "01" and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


class ProxyOverRealMCP(TestCase):
    """Base: a real MCP server subprocess and the proxy listening on a loopback port."""

    transport = "streamable-http"
    timeout = 120

    def setUp(self) -> None:
        if start_mcp_server is None or not os.path.exists("/proc/net/tcp"):
            raise SkipTest("needs tests/processes.py and Linux /proc")
        self.backend: MCPServerProcess = start_mcp_server(self.transport)
        self.addCleanup(lambda: self.backend.stop())
        self.root = PrefixTable()
        self.site = Site(self.root, requestFactory=make_request_factory(4 * 1024 * 1024))
        self.connections = WrappingFactory(self.site)
        listen: Any = reactor.listenTCP
        self.port = listen(0, self.connections, interface="127.0.0.1")
        self.public_url = f"http://127.0.0.1:{self.port.getHost().port}"
        config = config_from_mapping(
            {
                "server": {"public_url": self.public_url},
                "backend": {"url": self.backend.base_url, "transport": self.transport},
                "upstream": {"type": "development"},
            },
            environ={},
        )
        self.config = config
        ring = make_test_ring()
        provider = FakeUpstreamTokens()
        provider.tokens["tsid-1"] = "upstream-token-1"
        self.proxy = make_proxy_resource(
            config, ring, memory_storage(reactor).revocations, provider, reactor
        )
        self.root.fallback = self.proxy
        self.root.mount_all(proxy_routes(config))
        now = int(reactor.seconds())
        self.token = mint_token(
            ring.active_signing_key,
            {
                "iss": config.auth_server.issuer,
                "sub": "user-1",
                "aud": config.auth_server.allowed_audiences[0],
                "exp": now + 900,
                "iat": now,
                "jti": "jti-1",
                "client_id": "c",
                "scope": "openid",
                "tsid": "tsid-1",
            },
        )
        self.url = self.public_url + config.backend.path
        self.headers = {"Authorization": f"Bearer {self.token}"}

    @inlineCallbacks
    def tearDown(self) -> Any:  # type: ignore[override]
        yield self.port.stopListening()
        for protocol in list(self.connections.protocols):
            protocol.transport.loseConnection()
        yield self.until(lambda: not self.connections.protocols)
        # Connections that finished a request meanwhile went back to the pool: close them too.
        yield self.proxy.close()

    @inlineCallbacks
    def until(self, condition: Callable[[], bool], attempts: int = 200) -> Any:
        """Poll ``condition`` on the reactor (a bounded wait for an outcome, not a timing test)."""
        for _ in range(attempts):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("condition never held")

    def in_thread(self, fn: Callable[[], Any]) -> Deferred[Any]:
        return threads.deferToThread(fn)

    def session(self) -> Any:
        """An async context manager yielding an initialized ClientSession through the proxy."""
        url, headers, transport = self.url, self.headers, self.transport

        class _Session:
            async def __aenter__(self) -> ClientSession:
                self._stack = __import__("contextlib").AsyncExitStack()
                if transport == "sse":
                    read, write = await self._stack.enter_async_context(
                        sse_client(url, headers=headers)
                    )
                else:
                    client = await self._stack.enter_async_context(
                        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
                    )
                    read, write = await self._stack.enter_async_context(
                        streamable_http_client(url, http_client=client)
                    )
                session = await self._stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                return session

            async def __aexit__(self, *exc: object) -> None:
                await self._stack.aclose()

        return _Session()


class MCPThroughProxyMixin:
    """The same scenarios on both transports."""

    @inlineCallbacks
    def test_tools_listed_and_called(self: Any) -> Any:
        async def scenario() -> tuple[list[str], str, dict[str, Any]]:
            async with self.session() as session:
                tools = await session.list_tools()
                echo = await session.call_tool("echo", {"text": "hello"})
                whoami = await session.call_tool("whoami", {})
                return (
                    sorted(t.name for t in tools.tools),
                    echo.content[0].text,
                    json.loads(whoami.content[0].text),
                )

        names, echoed, who = yield self.in_thread(lambda: anyio.run(scenario))
        self.assertEqual(names, ["count", "echo", "whoami"])
        self.assertEqual(echoed, "hello")
        # The backend sees the upstream token, never authproxy's JWT.
        self.assertEqual(who["authorization"], "Bearer upstream-token-1")

    @inlineCallbacks
    def test_progress_streams_before_result(self: Any) -> Any:
        n = 10

        async def scenario() -> list[str]:
            events: list[str] = []
            first = anyio.Event()

            async def progress(value: float, total: float | None, message: str | None) -> None:
                events.append(f"progress {int(value)}")
                first.set()

            async with self.session() as session:

                async def side_call() -> None:
                    # Made after the first progress arrived: with a buffering proxy it could
                    # only complete after the long call's result.
                    await first.wait()
                    await session.call_tool("echo", {"text": "meanwhile"})
                    events.append("side call done")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(side_call)
                    result = await session.call_tool(
                        "count", {"n": n, "delay": 0.2}, progress_callback=progress
                    )
                    events.append("result " + result.content[0].text)
            return events

        events = yield self.in_thread(lambda: anyio.run(scenario))
        progress = [e for e in events if e.startswith("progress")]
        self.assertEqual(progress, [f"progress {i}" for i in range(1, n + 1)])
        self.assertEqual(events[-1], f"result counted {n}")
        self.assertLess(events.index("side call done"), events.index(f"result counted {n}"))

    @inlineCallbacks
    def test_client_disconnect_closes_backend_connection(self: Any) -> Any:
        backend_port = self.backend.port
        seen: list[int] = []

        async def scenario() -> None:
            first = anyio.Event()

            async def progress(value: float, total: float | None, message: str | None) -> None:
                first.set()

            try:
                async with self.session() as session:
                    async with anyio.create_task_group() as tg:

                        async def call() -> None:
                            await session.call_tool(
                                "count", {"n": 500, "delay": 0.1}, progress_callback=progress
                            )

                        tg.start_soon(call)
                        await first.wait()
                        seen.append(established_to(backend_port))
                        tg.cancel_scope.cancel()
            except* anyio.BrokenResourceError:
                # The SDK's SSE reader can race its own teardown after the cancellation (an
                # event arrives for a stream it already closed); what is tested is below.
                pass

        yield self.in_thread(lambda: anyio.run(scenario))
        self.assertGreaterEqual(seen[0], 1)
        # Idle pooled connections are fine; an abandoned stream would stay established.
        yield self.proxy.close()
        yield self.until(lambda: established_to(backend_port) == 0)


class StreamableHTTPTests(MCPThroughProxyMixin, ProxyOverRealMCP):
    transport = "streamable-http"

    def post(self, client: httpx2.Client, body: dict[str, Any], session: str | None = None) -> Any:
        headers = {**self.headers, "Accept": ACCEPT, "Content-Type": "application/json"}
        if session:
            headers["Mcp-Session-Id"] = session
        return client.post(self.url, json=body, headers=headers)

    @inlineCallbacks
    def test_backend_killed_mid_stream(self) -> Any:
        def scenario() -> tuple[list[str], int, str]:
            with httpx2.Client(timeout=httpx2.Timeout(30)) as client:
                init = self.post(
                    client,
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {
                            "protocolVersion": "2025-06-18",
                            "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"},
                        },
                    },
                )
                session = init.headers["mcp-session-id"]
                self.post(
                    client, {"jsonrpc": "2.0", "method": "notifications/initialized"}, session
                )
                lines: list[str] = []
                headers = {**self.headers, "Accept": ACCEPT, "Mcp-Session-Id": session}
                call = {
                    "jsonrpc": "2.0",
                    "id": 2,
                    "method": "tools/call",
                    "params": {
                        "name": "count",
                        "arguments": {"n": 500, "delay": 0.1},
                        "_meta": {"progressToken": "p"},
                    },
                }
                cut = False
                with client.stream("POST", self.url, json=call, headers=headers) as response:
                    try:
                        for line in response.iter_lines():
                            lines.append(line)
                            if "notifications/progress" in line and len(lines) < 1000:
                                if self.backend.process.running:
                                    self.backend.process.kill()
                    except httpx2.RemoteProtocolError:
                        cut = True  # the response ended without its last chunk
                after = client.post(self.url, json={}, headers=headers)
                return lines, cut, after.status_code, after.json()["error"]

        lines, cut, status, error = yield self.in_thread(scenario)
        self.assertTrue(any("notifications/progress" in line for line in lines))
        self.assertFalse(any('"id":2' in line.replace(" ", "") for line in lines))
        self.assertTrue(cut, "a backend death must not look like a complete response")
        self.assertEqual((status, error), (502, "bad_gateway"))


class LegacySSETests(MCPThroughProxyMixin, ProxyOverRealMCP):
    transport = "sse"

    @inlineCallbacks
    def test_endpoint_rewritten_and_backend_death_ends_stream(self) -> Any:
        def scenario() -> tuple[list[str], bool, int, int]:
            lines: list[str] = []
            cut = False
            with httpx2.Client(timeout=httpx2.Timeout(30)) as client:
                headers = {**self.headers, "Accept": "text/event-stream"}
                with client.stream("GET", self.url, headers=headers) as response:
                    try:
                        for line in response.iter_lines():
                            lines.append(line)
                            if line.startswith("data:") and self.backend.process.running:
                                self.backend.process.kill()
                    except httpx2.RemoteProtocolError:
                        cut = True  # the response ended without its last chunk
                # The session died with its stream: authproxy forgets it (no backend call).
                data = next(line for line in lines if line.startswith("data:"))
                message_url = self.public_url + data.removeprefix("data: ")
                posted = client.post(message_url, json={}, headers=self.headers)
                after = client.get(self.url, headers=headers)
                return lines, cut, posted.status_code, after.status_code

        lines, cut, posted, status = yield self.in_thread(scenario)
        self.assertTrue(cut, "a backend death must not look like a complete response")
        self.assertIn("event: endpoint", lines)
        data = next(line for line in lines if line.startswith("data:"))
        self.assertTrue(data.startswith("data: /messages/?session_id="), data)
        self.assertEqual((posted, status), (404, 502))
