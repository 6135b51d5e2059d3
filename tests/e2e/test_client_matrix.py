"""The client matrix: the MCP clients people use, each through a real deployment.

Every client does discovery (401 -> RFC 9728 -> RFC 8414), gets a client_id (dynamic
registration, or a client ID metadata document), logs in through the real oidc-provider and
authproxy's consent page, lists tools, calls ``echo`` and ``count`` with progress
notifications, then refreshes its access token and calls again, over streamable HTTP and
legacy SSE:

- the TypeScript MCP SDK (tests/mcp-ts, pinned by package-lock.json);
- the Python MCP SDK 1.x (tests/mcp-py1, its own virtualenv, pinned by requirements.txt);
- the Python MCP SDK 2.x (the dev environment's, pinned in setup.cfg);
- a client ID metadata document client (the Python SDK 2.x, client_id the URL of a document
  served on loopback; authproxy's ``allow_loopback`` admits it).

One deployment per transport serves every client (module-scoped); each client has its own
client_id, tokens and browser profile.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import processes as procs
from tests.e2e import client_matrix as matrix
from tests.e2e.harness import CLIENT_REDIRECT, Deployment, MCPUser, deploy
from tests.e2e.test_scenarios import list_echo_count

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def document() -> Iterator[matrix.MetadataDocumentServer]:
    server = matrix.MetadataDocumentServer([CLIENT_REDIRECT])
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["streamable-http", "sse"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    procs.ensure_oidc_fixture()
    d = deploy(
        tmp_path_factory.mktemp(f"matrix-{request.param}"),
        request.param,
        extra_config={"auth_server": {"client_metadata_documents": {"allow_loopback": True}}},
    )
    yield d
    d.stop()


def assert_full_scenario(out: dict[str, Any]) -> None:
    """Login, tools, progress and a refresh without a second login."""
    assert out["tools"] == ["count", "echo", "whoami"]
    assert out["echo"] == "hello through authproxy"
    assert out["progress"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert out["count"] == "counted 5"
    assert out["echo_after_refresh"] == "after refresh"
    assert out["refreshed"] is True, "the access token was not refreshed"
    assert out["logins"] == 1, "the refresh went through a second login"


def run_subprocess_client(command: list[str], d: Deployment) -> dict[str, Any]:
    return matrix.run_client(
        command,
        d.mcp_url,
        d.backend.transport,
        CLIENT_REDIRECT,
        matrix.browser_login("alice", procs.OIDC_PASSWORD),
        log_dir=d.proxy.log_dir,
    )


def test_typescript_sdk(deployment: Deployment) -> None:
    assert_full_scenario(run_subprocess_client(matrix.typescript_client(), deployment))


def test_python_sdk_1(deployment: Deployment) -> None:
    assert_full_scenario(run_subprocess_client(matrix.python_mcp1_client(), deployment))


def python_sdk_2_scenario(user: MCPUser) -> dict[str, Any]:
    """The matrix's scenario with the dev environment's SDK, in process."""
    first = procs.run_async(user.session, list_echo_count)
    assert user.storage.tokens is not None and user.oauth is not None
    before = user.storage.tokens.access_token
    assert user.login is not None
    pages = [body for _, _, body in user.login.agent.pages]  # the next session's agent is new
    # As after waiting out the lifetime (0 would mean 'no expiry'; 1 is long past).
    user.oauth.context.token_expiry_time = 1

    async def again(client: Any) -> str:
        result = await client.call_tool("echo", {"text": "after refresh"})
        return str(result.content[0].text)

    events = first["events"]
    return {
        "tools": first["tools"],
        "echo": first["echo"],
        "progress": [value for kind, value in events if kind == "progress"],
        "count": events[-1][1],
        "echo_after_refresh": procs.run_async(user.session, again),
        "refreshed": user.storage.tokens.access_token != before,
        "logins": len(user.login.authorize_urls),
        "pages": pages,
    }


def test_python_sdk_2(deployment: Deployment) -> None:
    user = MCPUser(deployment)
    assert_full_scenario(python_sdk_2_scenario(user))
    assert user.storage.client_info is not None
    assert not user.storage.client_info.client_id.startswith("http"), "registered, not CIMD"


def test_client_id_metadata_document(
    deployment: Deployment, document: matrix.MetadataDocumentServer
) -> None:
    """The SDK takes the metadata advertising CIMD, skips registration, and authproxy fetches
    the document at /oauth/authorize and /oauth/token (the refresh)."""
    fetches = document.fetches
    user = MCPUser(deployment, client_metadata_url=document.url)
    out = python_sdk_2_scenario(user)
    assert_full_scenario(out)
    assert user.storage.client_info is not None
    assert user.storage.client_info.client_id == document.url
    assert document.fetches > fetches
    # authproxy's consent page names where the identity comes from: the document's host.
    assert any("Identity from" in page and "127.0.0.1" in page for page in out["pages"])
