"""The whole product as a user meets it: real IdP, real MCP server and client, authproxy under twistd.

Each scenario starts its processes on loopback and stops them. They need the npm fixture
(``npm ci`` in tests/oidc), which .ci/run installs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from jwcrypto import jwk, jws
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests import processes as procs
from tests.e2e.harness import Deployment, MCPUser, deploy
from tests.e2e.useragent import UserAgentError

pytestmark = pytest.mark.e2e


@pytest.fixture
def root(tmp_path: Path) -> Path:
    procs.ensure_oidc_fixture()
    return tmp_path


@pytest.fixture(params=["streamable-http", "sse"])
def deployment(request: pytest.FixtureRequest, root: Path) -> Iterator[Deployment]:
    d = deploy(root, request.param)
    yield d
    d.stop()


def find_user_agent_error(error: BaseException) -> UserAgentError | None:
    if isinstance(error, UserAgentError):
        return error
    for inner in getattr(error, "exceptions", ()):
        if (found := find_user_agent_error(inner)) is not None:
            return found
    cause = error.__cause__ or error.__context__
    return find_user_agent_error(cause) if cause is not None else None


def kid_of(token: str) -> str:
    header = jws.JWS()
    header.deserialize(token)
    return str(header.jose_header["kid"])


def thumbprint(pem: bytes) -> str:
    return str(jwk.JWK.from_pem(pem).thumbprint())


async def list_echo_count(client: Client, n: int = 5) -> dict[str, Any]:
    events: list[Any] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        events.append(("progress", progress))

    tools = sorted(tool.name for tool in (await client.list_tools()).tools)
    echoed = await client.call_tool("echo", {"text": "hello through authproxy"})
    result = await client.call_tool("count", {"n": n, "delay": 0.05}, progress_callback=progress)
    events.append(("result", result.content[0].text))  # type: ignore[union-attr]
    return {"tools": tools, "echo": echoed.content[0].text, "events": events}  # type: ignore[union-attr]


def test_login_and_stream(deployment: Deployment) -> None:
    """Scenarios 1 and 2: 401 -> discovery -> registration -> login -> token -> MCP, both transports."""
    unauthenticated = httpx2.post(deployment.mcp_url, json={})
    assert unauthenticated.status_code == 401
    assert "resource_metadata=" in unauthenticated.headers["www-authenticate"]

    user = MCPUser(deployment)
    out = procs.run_async(user.session, list_echo_count)
    assert out["tools"] == ["count", "echo", "whoami"]
    assert out["echo"] == "hello through authproxy"
    assert out["events"] == [("progress", float(i)) for i in range(1, 6)] + [
        ("result", "counted 5")
    ]
    assert user.login is not None and len(user.login.authorize_urls) == 1
    assert user.storage.tokens is not None and user.storage.tokens.refresh_token


def test_issuer_with_a_path(root: Path) -> None:
    """An issuer with a path: discovery through RFC 8414 path-inserted metadata, then a login
    whose IdP callback reaches authproxy (the callback stays at public_url's root)."""
    d = deploy(root, issuer_path="/auth")
    try:
        issuer = d.proxy.url + "/auth"
        inserted = httpx2.get(d.proxy.url + "/.well-known/oauth-authorization-server/auth")
        assert inserted.status_code == 200
        assert inserted.json()["issuer"] == issuer
        resource = httpx2.get(d.proxy.url + "/.well-known/oauth-protected-resource/mcp").json()
        assert resource["authorization_servers"] == [issuer]

        user = MCPUser(d)
        out = procs.run_async(user.session, list_echo_count)
        assert out["echo"] == "hello through authproxy"
        assert user.login is not None and len(user.login.authorize_urls) == 1
    finally:
        d.stop()


@pytest.mark.parametrize("transport", ["streamable-http"])
def test_backend_sees_upstream_token_never_authproxys(root: Path, transport: str) -> None:
    """Scenario 3."""
    d = deploy(root, transport)
    try:
        user = MCPUser(d)

        async def whoami(client: Client) -> dict[str, Any]:
            result = await client.call_tool("whoami", {})
            return dict(result.structured_content or {})

        seen = procs.run_async(user.session, whoami)
        assert user.storage.tokens is not None
        ours = user.storage.tokens.access_token
        authorization = seen["authorization"]
        assert authorization and authorization.startswith("Bearer ")
        assert ours not in authorization
        # The IdP's access token is opaque to authproxy's JWKS: it is not our JWT.
        upstream = authorization.removeprefix("Bearer ")
        assert upstream.count(".") != 2 or kid_of(upstream) not in {
            thumbprint(pem) for pem in d.keys.key_pems
        }
    finally:
        d.stop()


def test_expired_access_token_is_refreshed(root: Path) -> None:
    """Scenario 4: a 1-minute access token expires; the client refreshes and keeps working."""
    d = deploy(root, access_token_lifespan="1m")
    try:
        user = MCPUser(d)
        procs.run_async(user.session, list_echo_count)
        assert user.storage.tokens is not None and user.oauth is not None
        first = user.storage.tokens.access_token
        # Hand the client a token it considers expired (as after waiting out the minute).
        # 0 would mean 'no expiry' to the SDK; 1 is long past.
        user.oauth.context.token_expiry_time = 1
        out = procs.run_async(user.session, list_echo_count)
        assert out["echo"] == "hello through authproxy"
        assert user.storage.tokens.access_token != first
        assert user.login is not None and len(user.login.authorize_urls) == 1, "no second login"
    finally:
        d.stop()


def test_key_rotation_keeps_streams_and_requests(root: Path) -> None:
    """Scenario 5: keys rotate (kubelet-style) during an open stream; nothing fails."""
    d = deploy(root, "streamable-http")
    try:
        user = MCPUser(d)
        procs.run_async(user.session, list_echo_count)
        old_kid = thumbprint(d.keys.key_pems[0])
        assert user.storage.tokens is not None
        assert kid_of(user.storage.tokens.access_token) == old_kid

        async def stream_while_rotating(client: Client) -> dict[str, Any]:
            progress_seen: list[float] = []
            echoes: list[str] = []
            first = anyio.Event()

            async def progress(p: float, total: float | None, message: str | None) -> None:
                progress_seen.append(p)
                first.set()

            async def rotate_and_call() -> None:
                await first.wait()
                for i in range(3):
                    await anyio.to_thread.run_sync(d.keys.rotate)
                    await anyio.sleep(0.4)
                    r = await client.call_tool("echo", {"text": f"during rotation {i}"})
                    echoes.append(r.content[0].text)  # type: ignore[union-attr]

            async with anyio.create_task_group() as tg:
                tg.start_soon(rotate_and_call)
                result = await client.call_tool(
                    "count", {"n": 30, "delay": 0.1}, progress_callback=progress
                )
            return {"progress": progress_seen, "result": result, "echoes": echoes}

        out = procs.run_async(user.session, stream_while_rotating)
        assert out["progress"] == [float(i) for i in range(1, 31)]
        assert out["result"].content[0].text == "counted 30"
        assert out["echoes"] == [f"during rotation {i}" for i in range(3)]
        # The token from before the rotations kept working: no 401 sent the client to log in.
        assert user.login is not None and len(user.login.authorize_urls) == 1

        # New tokens carry the new kid.
        assert user.oauth is not None
        user.oauth.context.token_expiry_time = 1
        procs.run_async(user.session, list_echo_count)
        assert kid_of(user.storage.tokens.access_token) == thumbprint(d.keys.key_pems[0])
        jwks = httpx2.get(d.proxy.url + "/.well-known/jwks.json").json()
        assert [k["kid"] for k in jwks["keys"]] == [thumbprint(p) for p in d.keys.key_pems]
    finally:
        d.stop()


def test_restart_keeps_access_tokens_valid(root: Path) -> None:
    """Scenario 6: authproxy restarts with the same keys; earlier access tokens still work.

    Storage is in memory: a restart forgets registered clients, refresh tokens and the
    users' upstream token sessions, while keys live on disk. So the access token keeps
    verifying, and with ``header_strategy = "none"`` (no upstream token to look up) it
    keeps reaching the backend.
    """
    d = deploy(root, "streamable-http", header_strategy="none")
    try:
        user = MCPUser(d)
        procs.run_async(user.session, list_echo_count)
        assert user.storage.tokens is not None
        token = user.storage.tokens.access_token
        before = httpx2.get(d.proxy.url + "/.well-known/jwks.json").json()
        d.proxy.restart()
        after = httpx2.get(d.proxy.url + "/.well-known/jwks.json").json()
        assert before == after

        async def with_old_token() -> str:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with http, Client(streamable_http_client(d.mcp_url, http_client=http)) as c:
                result = await c.call_tool("echo", {"text": "after restart"})
                return str(result.content[0].text)  # type: ignore[union-attr]

        assert procs.run_async(with_old_token) == "after restart"
    finally:
        d.stop()


def test_idp_and_backend_outages(root: Path) -> None:
    """Scenario 7: IdP down -> error page, daemon healthy; backend down -> 502, then recovers."""
    d = deploy(root, "streamable-http")
    try:
        user = MCPUser(d)
        procs.run_async(user.session, list_echo_count)
        assert user.storage.tokens is not None
        token = user.storage.tokens.access_token

        # Backend stopped: 502, daemon stays up; back again: requests succeed.
        port = d.backend.port
        d.backend.stop()
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, text/event-stream",
        }
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        down = httpx2.post(d.mcp_url, headers=headers, json=ping)
        assert down.status_code == 502
        assert down.headers["content-type"].startswith("application/json")
        d.backend = procs.start_mcp_server("streamable-http", port=port, log_dir=root)
        out = procs.run_async(user.session, list_echo_count)
        assert out["echo"] == "hello through authproxy"

        # IdP stopped: a new login shows the upstream-failure page; /health stays 200.
        d.idp.stop()

        async def try_login() -> UserAgentError | None:
            try:
                await MCPUser(d).session(list_echo_count)
            except BaseException as e:  # the SDK wraps it in exception groups
                return find_user_agent_error(e)
            return None

        error = procs.run_async(try_login)
        assert error is not None and error.status == 502, error
        assert "<html" in error.body.lower()
        assert httpx2.get(d.proxy.url + "/health").json() == {"status": "ok"}
    finally:
        d.stop()


def test_jwks_and_metadata_are_served(root: Path) -> None:
    d = deploy(root, "streamable-http")
    try:
        prm = httpx2.get(d.proxy.url + "/.well-known/oauth-protected-resource/mcp").json()
        assert prm["resource"] == d.mcp_url
        asm = httpx2.get(d.proxy.url + "/.well-known/oauth-authorization-server").json()
        assert asm["issuer"] == d.proxy.url
        assert json.loads(httpx2.get(d.proxy.url + "/ready").text)["status"] == "ready"
    finally:
        d.stop()


def test_step_up_for_a_tool_that_needs_more_scope(root: Path) -> None:
    """A scope rule gates one tool: the MCP SDK gets 403 insufficient_scope, re-authorizes
    with the challenge's scopes (the consent page shows the new one), and the call succeeds."""
    rule = {"method": "tools/call", "name": "cou?t", "scopes": ["mcp:admin"]}
    d = deploy(root, extra_config={"proxy": {"scope_rules": [rule]}})
    try:
        user = MCPUser(d)
        out = procs.run_async(user.session, list_echo_count)
        assert out["events"][-1] == ("result", "counted 5")
        assert user.login is not None and len(user.login.authorize_urls) == 2, "one step-up"
        first, stepped = user.login.authorize_urls
        assert "mcp%3Aadmin" not in first and "mcp%3Aadmin" in stepped
        assert user.storage.tokens is not None and user.storage.tokens.scope is not None
        assert "mcp:admin" in user.storage.tokens.scope.split()
        consent_pages = [p for p in user.login.agent.pages if "mcp:admin" in p[2]]
        assert consent_pages, "the step-up consent page names the new scope"
    finally:
        d.stop()
