"""Run MCP clients other than the dev venv's SDK against a deployment, as subprocesses.

The TypeScript SDK (tests/mcp-ts, node) and the Python SDK 1.x (tests/mcp-py1, its own
virtualenv) run as separate processes speaking one line protocol of JSON objects:

- the client prints ``{"authorize": URL}`` when its SDK wants the user to log in; the test
  plays the browser (``UserAgent``: the IdP's login page, authproxy's consent page) and writes
  back one line, the callback URL the flow ended at;
- the client prints ``{"result": {...}}`` when it is done and exits 0.

Any other line on stdout is ignored; stderr goes to a log file whose tail is quoted when
the client fails.

Their installs are fixtures like tests/oidc: missing, a test skips, or fails under ``CI``
(so that a broken install step cannot hide behind a skip). Both are pinned: package-lock.json
and a frozen requirements.txt, so a client library update reaches CI only as a change to
these files, and a change that breaks login fails the matrix.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs

from tests import processes as procs
from tests.e2e.useragent import UserAgent

TS_DIR = procs.REPO_ROOT / "tests" / "mcp-ts"
MCP1_DIR = procs.REPO_ROOT / "tests" / "mcp-py1"
#: The virtualenv .ci/run makes for the Python SDK 1.x (the two majors cannot share one).
MCP1_VENV = procs.REPO_ROOT / ".venv-mcp1"


def require_fixture(missing: str | None) -> None:
    """Skip the test for a missing install, or fail under ``CI``."""
    if missing is None:
        return
    if os.environ.get("CI"):
        raise AssertionError(missing)
    raise unittest.SkipTest(missing)


def typescript_client() -> list[str]:
    """The TypeScript SDK client's command (before its arguments)."""
    node = shutil.which("node")
    require_fixture(
        "node is not installed"
        if node is None
        else None
        if (TS_DIR / "node_modules" / "@modelcontextprotocol" / "sdk").is_dir()
        else f"@modelcontextprotocol/sdk is not installed: run `npm ci` in {TS_DIR}"
    )
    return [str(node), str(TS_DIR / "client.js")]


def python_mcp1_client() -> list[str]:
    """The Python SDK 1.x client's command (before its arguments)."""
    python = MCP1_VENV / "bin" / "python"
    require_fixture(
        None
        if python.exists()
        else f"no {MCP1_VENV}: python3 -m venv {MCP1_VENV} && "
        f"{MCP1_VENV}/bin/pip install -r {MCP1_DIR}/requirements.txt"
    )
    return [str(python), str(MCP1_DIR / "client.py")]


class ClientFailed(AssertionError):
    """The client exited, timed out or broke the protocol; the message quotes its log."""


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text("utf-8", "replace").splitlines()[-lines:])


def run_client(
    command: list[str],
    mcp_url: str,
    transport: str,
    redirect_uri: str,
    agent_login: Any,
    *,
    log_dir: Path,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Run a matrix client to completion; its result object.

    ``agent_login(authorize_url)`` is the browser step: it returns the callback URL.
    """
    log_path = log_dir / f"{Path(command[-1]).parent.name}-{transport}-{time.time_ns()}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [*command, mcp_url, transport, redirect_uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    assert popen.stdin is not None and popen.stdout is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise ClientFailed(f"no result after {timeout} s:\n{_tail(log_path)}") from None
            if line is None:
                popen.wait(5)
                raise ClientFailed(
                    f"exited with {popen.returncode} before its result:\n{_tail(log_path)}"
                )
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "authorize" in message:
                popen.stdin.write(agent_login(message["authorize"]) + "\n")
                popen.stdin.flush()
            elif "result" in message:
                result: dict[str, Any] = message["result"]
                return result
    finally:
        popen.stdin.close()
        if popen.poll() is None:
            try:
                popen.wait(5)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def browser_login(username: str, password: str) -> Any:
    """The browser step for :func:`run_client`: one fresh browser profile per login."""

    def login(authorize_url: str) -> str:
        async def go() -> str:
            async with UserAgent() as agent:
                return await agent.login(authorize_url, username, password)

        return procs.run_async(go)

    return login


@attrs.define
class MetadataDocumentServer:
    """A client ID metadata document served on loopback, counting the fetches."""

    redirect_uris: list[str]
    client_name: str = "authproxy e2e (metadata document)"
    fetches: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        """The document's URL: the client_id."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/client.json"

    def document(self) -> dict[str, Any]:
        """The document (draft-ietf-oauth-client-id-metadata-document), ``client_id`` its URL."""
        return {
            "client_id": self.url,
            "client_name": self.client_name,
            "redirect_uris": self.redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/client.json":
                    self.send_error(404)
                    return
                owner.fetches += 1
                body = json.dumps(owner.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
