"""The README's demo: etc/demo.toml with its supervised demo MCP server and development login.

An MCP SDK client logs in through the development login page and the consent page, then
uses the demo tools. Ports are swapped for free ones; everything else is the shipped file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client

from tests import processes as procs
from tests.e2e.harness import Authproxy, Deployment, MCPUser

DEMO = procs.REPO_ROOT / "etc" / "demo.toml"


def demo_config(root: Path) -> tuple[Path, int]:
    port, backend_port = procs.free_port(), procs.free_port()
    text = DEMO.read_text().replace("8080", str(port)).replace("9000", str(backend_port))
    assert re.search(rf"tcp:{port}:interface=127\.0\.0\.1", text)
    path = root / "demo.toml"
    path.write_text(text)
    return path, port


async def use_demo(client: Client) -> dict[str, Any]:
    progress: list[float] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        progress.append(p)

    tools = sorted(t.name for t in (await client.list_tools()).tools)
    counted = await client.call_tool("count", {"n": 3, "delay": 0}, progress_callback=on_progress)
    whoami = await client.call_tool("whoami", {})
    return {
        "tools": tools,
        "count": counted.content[0].text,  # type: ignore[union-attr]
        "progress": progress,
        "whoami": whoami.structured_content,
    }


def test_demo_config_serves_a_working_authenticated_endpoint(tmp_path: Path) -> None:
    config, port = demo_config(tmp_path)
    proxy = Authproxy(config, port, tmp_path)
    proxy.start()  # waits for /ready, which waits for the supervised backend
    try:
        assert httpx2.post(proxy.url + "/mcp", json={}).status_code == 401
        deployment: Any = Deployment(idp=None, backend=_StreamableHTTP(), proxy=proxy, keys=None)  # type: ignore[arg-type]
        user = MCPUser(deployment)
        out = procs.run_async(user.session, use_demo)
        assert out["tools"] == ["count", "echo", "whoami"]
        assert out["count"] == "counted 3"
        assert out["progress"] == [1.0, 2.0, 3.0]
        # The backend got the development IdP's opaque token, not authproxy's JWT.
        authorization = out["whoami"]["authorization"]
        assert user.storage.tokens is not None
        assert authorization.startswith("Bearer ")
        assert user.storage.tokens.access_token not in authorization
        assert user.login is not None
        assert any("/oauth/dev-login" in visit.url for visit in user.login.agent.visits)
    finally:
        proxy.stop()
    assert proxy.process is None


class _StreamableHTTP:
    transport = "streamable-http"


@pytest.mark.parametrize("listen", ["tcp:8080:interface=0.0.0.0"])
def test_development_upstream_refuses_non_loopback(tmp_path: Path, listen: str) -> None:
    text = DEMO.read_text().replace('"tcp:8080:interface=127.0.0.1"', f'"{listen}"')
    path = tmp_path / "demo.toml"
    path.write_text(text)
    result = subprocess.run(
        procs.twistd_authproxy(path),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=procs.REPO_ROOT,
    )
    assert result.returncode == 1, result.stderr
    assert "server.listen[0]" in result.stderr and "loopback" in result.stderr
