"""The Python MCP SDK 1.x client for authproxy's end-to-end client matrix.

Runs under its own interpreter (``.venv-mcp1``, made by .ci/run from requirements.txt beside
this file): mcp 1.x and 2.x cannot share one environment. It speaks the matrix's line
protocol on stdio (see tests/e2e/client_matrix.py)::

    python client.py MCP_URL streamable-http|sse REDIRECT_URI

prints ``{"authorize": URL}`` when it needs a login and reads the callback URL on stdin, then
logs in, lists tools, calls ``echo`` and ``count`` (with progress), lets its access token
expire, calls ``echo`` again (the SDK refreshes), and prints ``{"result": {...}}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.auth import OAuthClientMetadata

# The checkout's tests package, for the in-memory TokenStorage it shares with the 2.x tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e.token_storage import MemoryTokenStorage  # noqa: E402


def emit(message: dict) -> None:
    print(json.dumps(message), flush=True)


async def main(url: str, transport: str, redirect_uri: str) -> None:
    storage = MemoryTokenStorage()
    logins: list[str] = []
    callback: dict[str, str] = {}

    async def redirect_handler(authorization_url: str) -> None:
        logins.append(authorization_url)
        emit({"authorize": authorization_url})
        line = await anyio.to_thread.run_sync(sys.stdin.readline)
        callback.clear()
        callback.update({k: v[0] for k, v in parse_qs(urlsplit(line.strip()).query).items()})

    async def callback_handler() -> tuple[str, str | None]:
        if "code" not in callback:
            raise RuntimeError(f"authorization failed: {callback.get('error', 'no code')}")
        return callback["code"], callback.get("state")

    oauth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            redirect_uris=[redirect_uri],
            client_name="authproxy e2e (mcp 1.x)",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )

    async def session(use):
        if transport == "sse":
            async with sse_client(url, auth=oauth) as (read, write):
                async with ClientSession(read, write) as client:
                    await client.initialize()
                    return await use(client)
        async with streamablehttp_client(url, auth=oauth) as (read, write, _):
            async with ClientSession(read, write) as client:
                await client.initialize()
                return await use(client)

    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def first(client: ClientSession) -> dict:
        tools = sorted(tool.name for tool in (await client.list_tools()).tools)
        echo = await client.call_tool("echo", {"text": "hello through authproxy"})
        count = await client.call_tool(
            "count", {"n": 5, "delay": 0.05}, progress_callback=on_progress
        )
        return {"tools": tools, "echo": echo.content[0].text, "count": count.content[0].text}

    async def again(client: ClientSession) -> str:
        return (await client.call_tool("echo", {"text": "after refresh"})).content[0].text

    out = await session(first)
    before = storage.tokens.access_token
    # As after waiting out the token's lifetime: the SDK refreshes before its next request.
    # (0 would mean 'no expiry'; 1 is long past.)
    oauth.context.token_expiry_time = 1
    out["echo_after_refresh"] = await session(again)
    out["progress"] = progress
    out["logins"] = len(logins)
    out["refreshed"] = storage.tokens.access_token != before
    emit({"result": out})


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:4])
