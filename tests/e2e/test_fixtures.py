"""The end-to-end fixtures work on their own: the OpenID provider, the user agent, the MCP server.

These start real processes on loopback (node's oidc-provider, the MCP SDK server) and talk to
them with real clients; authproxy itself is not involved.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx2
import pytest
from jwcrypto import jwk, jwt
from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tests import processes as procs
from tests.e2e.useragent import UserAgent, UserAgentError, callback_params, parse_forms

REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
CLIENT = procs.OIDCClient("authproxy", "s3cret", (REDIRECT_URI,))
TRANSPORTS = ["streamable-http", "sse"]


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="module")
def oidc(log_dir: Path) -> Iterator[procs.OIDCProvider]:
    provider = procs.start_oidc_provider([CLIENT], access_ttl=60, log_dir=log_dir)
    yield provider
    provider.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
def mcp_server(request: pytest.FixtureRequest, log_dir: Path) -> Iterator[procs.MCPServerProcess]:
    server = procs.start_mcp_server(request.param, log_dir=log_dir)
    yield server
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: -15 is a clean exit.
    assert server.stop() in (0, -15)
    assert "Finished server process" in server.process.output()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(discovery: dict[str, Any], state: str, challenge: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": CLIENT.client_id,
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile offline_access",
        "state": state,
        "nonce": "nonce-" + state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{discovery['authorization_endpoint']}?{urlencode(params)}"


def test_free_port_is_bindable() -> None:
    port = procs.free_port()
    assert 1024 <= port <= 65535
    assert not procs._port_ready(port)


def test_start_process_reports_early_exit(tmp_path: Path) -> None:
    with pytest.raises(procs.ProcessStartError, match="exited with 3"):
        procs.start_process(
            ["sh", "-c", "echo broken config; exit 3"],
            ready_line="never",
            log_dir=tmp_path,
            name="broken",
        )


def test_start_process_and_stop(tmp_path: Path) -> None:
    process = procs.start_process(
        ["sh", "-c", "echo ready 42; exec sleep 60"], ready_line=r"ready (\d+)", log_dir=tmp_path
    )
    assert process.ready_match is not None and process.ready_match.group(1) == "42"
    assert process.running
    assert process.stop() == -15
    assert "ready 42" in process.output()


def test_oidc_login_code_exchange_and_refresh(oidc: procs.OIDCProvider) -> None:
    async def flow() -> None:
        async with httpx2.AsyncClient() as http, UserAgent() as agent:
            discovery = (await http.get(f"{oidc.issuer}/.well-known/openid-configuration")).json()
            assert discovery["issuer"] == oidc.issuer
            assert discovery["code_challenge_methods_supported"] == ["S256"]
            assert discovery["authorization_response_iss_parameter_supported"] is True

            verifier, challenge = pkce()
            final = await agent.login(
                authorize_url(discovery, "state-1", challenge), "alice", procs.OIDC_PASSWORD
            )
            params = callback_params(final)
            assert final.startswith(REDIRECT_URI + "?")
            assert params["state"] == "state-1"
            assert params["iss"] == oidc.issuer
            # Both interactions were real pages: the login form, then the consent form.
            titles = [page for _, _, page in agent.pages]
            assert len(titles) == 2
            assert "<title>Sign-in</title>" in titles[0]
            assert "<title>Authorize</title>" in titles[1]

            auth = httpx2.BasicAuth(CLIENT.client_id, CLIENT.client_secret or "")
            response = await http.post(
                discovery["token_endpoint"],
                auth=auth,
                data={
                    "grant_type": "authorization_code",
                    "code": params["code"],
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": verifier,
                },
            )
            assert response.status_code == 200, response.text
            tokens = response.json()
            assert tokens["token_type"] == "Bearer"
            assert tokens["expires_in"] == 60
            assert tokens["refresh_token"]

            jwks = jwk.JWKSet.from_json((await http.get(discovery["jwks_uri"])).text)
            id_token = jwt.JWT(jwt=tokens["id_token"], key=jwks, expected_type="JWS")
            claims = json.loads(id_token.claims)
            assert claims["iss"] == oidc.issuer
            assert claims["aud"] == CLIENT.client_id
            assert claims["nonce"] == "nonce-state-1"
            assert (claims["sub"], claims["email"], claims["name"]) == (
                "alice",
                "alice@example.test",
                "Alice",
            )

            userinfo = await http.get(
                discovery["userinfo_endpoint"],
                headers={"Authorization": f"Bearer {tokens['access_token']}"},
            )
            assert userinfo.json()["sub"] == "alice"

            refreshed = await http.post(
                discovery["token_endpoint"],
                auth=auth,
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            )
            assert refreshed.status_code == 200, refreshed.text
            assert refreshed.json()["access_token"] != tokens["access_token"]

            # Same browser again: the IdP session and grant are remembered, no forms this time.
            pages_before = len(agent.pages)
            again = await agent.login(
                authorize_url(discovery, "state-2", pkce()[1]), "alice", procs.OIDC_PASSWORD
            )
            assert callback_params(again)["state"] == "state-2"
            assert len(agent.pages) == pages_before

            # The code is single use; a replay revokes the grant and its refresh token.
            replay = await http.post(
                discovery["token_endpoint"],
                auth=auth,
                data={
                    "grant_type": "authorization_code",
                    "code": params["code"],
                    "redirect_uri": REDIRECT_URI,
                    "code_verifier": verifier,
                },
            )
            assert replay.json()["error"] == "invalid_grant"
            revoked = await http.post(
                discovery["token_endpoint"],
                auth=auth,
                data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            )
            assert revoked.json()["error"] == "invalid_grant"

    procs.run_async(flow)


def test_oidc_refuses_wrong_password_and_missing_pkce(oidc: procs.OIDCProvider) -> None:
    async def flow() -> None:
        async with httpx2.AsyncClient() as http, UserAgent() as agent:
            discovery = (await http.get(f"{oidc.issuer}/.well-known/openid-configuration")).json()
            with pytest.raises(UserAgentError) as failure:
                await agent.login(authorize_url(discovery, "s", pkce()[1]), "alice", "wrong")
            assert failure.value.status == 401
            assert "Invalid user name or password" in failure.value.body

            url = authorize_url(discovery, "s2", "x").replace(
                "&code_challenge=x&code_challenge_method=S256", ""
            )
            final = await agent.login(url, "alice", procs.OIDC_PASSWORD)
            assert callback_params(final)["error"] == "invalid_request"

            denied = await UserAgent().login(
                authorize_url(discovery, "s3", pkce()[1]),
                "bob",
                procs.OIDC_PASSWORD,
                decision="deny",
            )
            assert callback_params(denied)["error"] == "access_denied"
            assert callback_params(denied)["state"] == "s3"

    procs.run_async(flow)


def test_parse_generic_consent_form() -> None:
    html = """<form method="post" action="/oauth/authorize/consent">
      <input type="hidden" name="csrf" value="abc"><input type="hidden" name="pending" value="p1">
      <button type="submit" name="decision" value="deny">Deny</button>
      <button type="submit" name="decision" value="approve">Approve</button></form>"""
    [form] = parse_forms(html)
    assert form.method == "POST"
    approve = next(b for b in form.buttons if b.says(["approve"]))
    assert form.values(approve) == [("csrf", "abc"), ("pending", "p1"), ("decision", "approve")]


def test_mcp_server_tools(mcp_server: procs.MCPServerProcess) -> None:
    def transport(headers: dict[str, str] | None = None) -> Any:
        if mcp_server.transport == "sse":
            return sse_client(mcp_server.url, headers=headers)
        http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10, read=60))
        return streamable_http_client(mcp_server.url, http_client=http)

    async def session() -> None:
        async with Client(transport()) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo", "count", "whoami"} <= tools

            echoed = await client.call_tool("echo", {"text": "héllo"})
            assert echoed.content[0].text == "héllo"  # type: ignore[union-attr]

            seen: list[tuple[float, float | None, str | None]] = []

            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                seen.append((progress, total, message))

            counted = await client.call_tool(
                "count", {"n": 5, "delay": 0.01}, progress_callback=on_progress
            )
            assert counted.content[0].text == "counted 5"  # type: ignore[union-attr]
            assert seen == [(i, 5, f"step {i} of 5") for i in range(1, 6)]

            anonymous = await client.call_tool("whoami", {})
            assert anonymous.structured_content == {
                "authorization": None,
                "x_upstream_authorization": None,
            }

        headers = {"Authorization": "Bearer upstream-at", "X-Upstream-Authorization": "Bearer x"}
        async with Client(transport(headers)) as client:
            who = await client.call_tool("whoami", {})
            assert who.structured_content == {
                "authorization": "Bearer upstream-at",
                "x_upstream_authorization": "Bearer x",
            }

        # The SDK's Host check: only the server's own address (what a proxy must send as Host).
        async with httpx2.AsyncClient(timeout=5) as http:
            method = "GET" if mcp_server.transport == "sse" else "POST"
            foreign = await http.request(
                method,
                mcp_server.url,
                headers={"Host": "127.0.0.1:1", "Content-Type": "application/json"},
                content=b"{}" if method == "POST" else None,
            )
            assert foreign.status_code == 421

    procs.run_async(session)


def test_oidc_provider_keeps_given_keys(log_dir: Path) -> None:
    jwks = procs.generate_oidc_jwks()
    provider = procs.start_oidc_provider([CLIENT], jwks=jwks, log_dir=log_dir)
    try:

        async def published() -> list[str]:
            async with httpx2.AsyncClient() as http:
                keys = (await http.get(f"{provider.issuer}/jwks")).json()["keys"]
                return [key["kid"] for key in keys]

        assert procs.run_async(published) == [jwks["keys"][0]["kid"]]
        assert provider.port > 0
    finally:
        provider.stop()
