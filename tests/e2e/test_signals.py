"""Signals with real processes: SIGTERM during a live stream, SIGHUP, ``kill -9``, and a
backend whose port another process holds.

authproxy runs under twistd with the development upstream and ``header_strategy = "none"``,
so a token minted with the configured signing key is all a client needs; the backend is the
real test MCP server, supervised by authproxy (``backend.command``). The stream is a
``count`` tool call (progress notifications over a POST's event stream) read with
``http.client``, which raises ``IncompleteRead`` for a chunked body cut without its last
chunk: so a clean end is told from a cut.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from authproxy.keys.ring import KeySources, load_key_set
from authproxy.testing.backend import mint_token
from authproxy.testing.keys import ec_pem, hmac_secret
from tests import processes as procs
from tests.e2e.harness import write_config

pytestmark = pytest.mark.e2e

ACCEPT = "application/json, text/event-stream"


def until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (a bound, not a timing test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@attrs.define
class Daemon:
    root: Path
    port: int
    backend_port: int
    config: Path
    process: procs.RunningProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: bool = True, logfile: Path | None = None) -> procs.RunningProcess:
        args = procs.twistd_authproxy(self.config)
        if logfile is not None:
            args.insert(args.index("authproxy"), f"--logfile={logfile}")
        self.process = procs.start_process(
            args,
            cwd=procs.REPO_ROOT,
            ready_url=self.url + "/ready" if ready else None,
            ready_port=None if ready else self.port,
            timeout=40,
            name="authproxy",
            log_dir=self.root,
        )
        return self.process

    def token(self) -> str:
        keyset = load_key_set(KeySources(signing_keys_dir=str(self.root / "keys")))
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": "user-1",
            "aud": self.url + "/mcp",
            "exp": now + 600,
            "iat": now,
            "jti": secrets.token_urlsafe(8),
            "client_id": "client-1",
            "scope": "openid",
            "tsid": "tsid-1",
        }
        return mint_token(keyset.signing_keys[0], claims)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port, backend_port = procs.free_port(), procs.free_port()
    (tmp_path / "keys").mkdir()
    (tmp_path / "hmac").mkdir()
    (tmp_path / "keys" / "key-0.pem").write_bytes(ec_pem())
    (tmp_path / "hmac" / "hmac-0").write_bytes(hmac_secret())  # text: never stripped short
    for path in (tmp_path / "keys" / "key-0.pem", tmp_path / "hmac" / "hmac-0"):
        path.chmod(0o400)
    url = f"http://127.0.0.1:{port}"
    config = write_config(
        tmp_path / "authproxy.toml",
        {
            "server": {
                "listen": [f"tcp:{port}:interface=127.0.0.1"],
                "public_url": url,
                "shutdown_grace": "3s",
            },
            "backend": {
                "url": f"http://127.0.0.1:{backend_port}",
                "command": procs.mcp_server_command(backend_port),
            },
            "auth_server": {
                "signing_keys_dir": str(tmp_path / "keys"),
                "hmac_secrets_dir": str(tmp_path / "hmac"),
            },
            "upstream": {"type": "development"},
            "upstream_token": {"header_strategy": "none"},
        },
    )
    d = Daemon(tmp_path, port, backend_port, config)
    yield d
    if d.process is not None:
        d.process.stop()


def post(conn: http.client.HTTPConnection, token: str, message: dict[str, Any], **headers: str):
    conn.request(
        "POST",
        "/mcp",
        body=json.dumps(message),
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": ACCEPT,
            **headers,
        },
    )
    return conn.getresponse()


def open_count_stream(daemon: Daemon, n: int) -> http.client.HTTPResponse:
    """An MCP session, then ``count(n)``: the response is an event stream of progress."""
    token = daemon.token()
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    init = post(
        conn,
        token,
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "signals-test", "version": "1"},
            },
        },
    )
    init.read()
    assert init.status == 200, init.status
    session = {"Mcp-Session-Id": init.getheader("mcp-session-id") or ""}
    done = post(conn, token, {"jsonrpc": "2.0", "method": "notifications/initialized"}, **session)
    done.read()
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "count", "arguments": {"n": n}, "_meta": {"progressToken": "p"}},
    }
    stream = post(conn, token, call, **session)
    assert stream.status == 200
    assert stream.getheader("content-type", "").startswith("text/event-stream")
    return stream


def read_events(stream: http.client.HTTPResponse, count: int | None = None) -> list[str]:
    """``count`` ``data:`` lines (all of them until the end when None)."""
    events: list[str] = []
    while count is None or len(events) < count:
        line = stream.readline()
        if not line:
            break
        if line.startswith(b"data:"):
            events.append(line.decode())
    return events


def test_sigterm_keeps_a_stream_through_the_grace_then_ends_it_cleanly(daemon: Daemon) -> None:
    process = daemon.start()
    stream = open_count_stream(daemon, 1000)  # 50 s of events: longer than the grace
    assert len(read_events(stream, 3)) == 3
    process.signal(signal.SIGTERM)
    # The listener closes at once: a new connection is refused (readiness turned 503 at the
    # same moment; no new connection can ask, the stream's connection is busy).
    assert until(lambda: refuses(daemon.port), 5)
    during = read_events(stream, 10)
    assert len(during) == 10, "the stream stopped delivering during the grace"
    # Then the stream ends with its last chunk (IncompleteRead here would be a cut).
    rest = read_events(stream)
    assert not any('"result"' in e for e in rest), "the count cannot have finished"
    assert process.popen.wait(30) == 0
    assert "streams ended cleanly" in process.output()
    assert until(lambda: refuses(daemon.backend_port), 10), "the backend outlived authproxy"


def test_a_stream_that_ends_before_the_grace_lets_shutdown_finish(daemon: Daemon) -> None:
    daemon.config.write_text(daemon.config.read_text().replace('"3s"', '"60s"'))
    process = daemon.start()
    stream = open_count_stream(daemon, 40)  # 2 s of events
    assert len(read_events(stream, 2)) == 2
    process.signal(signal.SIGTERM)
    events = read_events(stream)
    assert any('"result"' in e for e in events), "the call did not finish"
    # Far below the 60 s grace: shutdown went on when the stream ended.
    assert process.popen.wait(30) == 0
    assert "every request finished" in process.output()


def test_sighup_rereads_keys_reopens_the_log_and_keeps_serving(daemon: Daemon) -> None:
    log = daemon.root / "authproxy.log"
    process = daemon.start(logfile=log)
    (daemon.root / "keys" / "key-1.pem").write_bytes(ec_pem())
    rotated = daemon.root / "authproxy.log.1"
    log.rename(rotated)  # what logrotate does before its postrotate SIGHUP
    process.signal(signal.SIGHUP)

    def jwks_keys() -> int:
        return len(json.loads(get(daemon.port, "/.well-known/jwks.json")[1])["keys"])

    assert until(lambda: log.exists() and "SIGHUP" in log.read_text())
    assert process.running
    assert jwks_keys() == 2
    assert log.read_text().count("SIGHUP: key files re-read") == 1
    assert "SIGHUP" not in rotated.read_text()


def test_backend_dies_with_authproxy_on_kill_9(daemon: Daemon) -> None:
    process = daemon.start()
    assert not refuses(daemon.backend_port)
    os.kill(process.pid, signal.SIGKILL)  # authproxy alone, not its process group
    process.popen.wait(10)
    assert until(lambda: refuses(daemon.backend_port), 10), "the backend outlived kill -9"


def test_a_backend_port_held_by_another_process_is_not_ready(daemon: Daemon) -> None:
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", daemon.backend_port))
    squatter.listen(8)
    try:
        daemon.start(ready=False)

        def ready() -> tuple[int, dict[str, Any]]:
            status, body = get(daemon.port, "/ready")
            return status, json.loads(body)

        # The real backend exits on EADDRINUSE; the port still answers (the squatter).
        def exits() -> int:
            found = re.search(r"exited (\d+) times", str(ready()[1]["checks"]["backend"]))
            return int(found.group(1)) if found else 0

        assert until(lambda: exits() >= 2, 30)
        status, body = ready()
        assert status == 503
        assert "backend" in body["not_ready"]
    finally:
        squatter.close()
