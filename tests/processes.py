"""Start and stop real processes (twistd, the OpenID provider, MCP servers) on loopback only.

The end-to-end tests and the unit tests that need a real process share these; nothing here
depends on pytest, so trial runs them too.

Every process gets its combined stdout and stderr written, line by line as it arrives, to a log
file (kept for debugging; its tail is quoted when a process fails to start). Readiness is a line
on its output matching a regular expression, an HTTP URL answering 2xx, or a TCP port accepting
connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TypeVar

import attrs

REPO_ROOT = Path(__file__).resolve().parents[1]
OIDC_DIR = REPO_ROOT / "tests" / "oidc"

#: The password of every account at the test OpenID provider.
OIDC_PASSWORD = "pass"

_READY_POLL = 0.05

T = TypeVar("T")


class ProcessStartError(RuntimeError):
    """A process exited or timed out before it was ready; the message quotes its log."""


def twistd_authproxy(config: str | os.PathLike[str]) -> list[str]:
    """The command line users run: ``twistd -n --pidfile= authproxy --config FILE``.

    (``python -m twisted`` is the newer ``twist`` runner, not twistd.)
    """
    runner = "from twisted.scripts.twistd import run; run()"
    return [sys.executable, "-c", runner, "-n", "--pidfile=", "authproxy", "--config", str(config)]


def authproxy_command(*args: str) -> list[str]:
    """The ``authproxy`` console script's command line (``authproxy check ...``), run from
    this checkout with this interpreter."""
    return [sys.executable, "-m", "authproxy.command", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_async(fn: Callable[..., Awaitable[T]], *args: object, timeout: float | None = 120.0) -> T:
    """Run ``await fn(*args)`` in a fresh asyncio event loop on its own thread; its result.

    A thread of its own keeps the test independent of any loop or reactor (pytest-twisted) that
    runs in the main thread. Exceptions propagate; a ``TimeoutError`` after ``timeout`` seconds.
    """
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(_with_timeout(fn, args, timeout))
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"run_async-{getattr(fn, '__name__', 'fn')}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]


async def _with_timeout(
    fn: Callable[..., Awaitable[T]], args: tuple[object, ...], timeout: float | None
) -> T:
    async with asyncio.timeout(timeout):
        return await fn(*args)


def log_directory() -> Path:
    """Where process logs go: ``$AUTHPROXY_E2E_LOGS`` if set, else a fresh temporary directory."""
    configured = os.environ.get("AUTHPROXY_E2E_LOGS")
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="authproxy-e2e-"))


class _OutputPump(threading.Thread):
    """Copies a process's output to its log file and watches it for the ready line."""

    def __init__(self, source: IO[bytes], log: IO[bytes], ready_line: re.Pattern[str] | None):
        super().__init__(daemon=True)
        self._source = source
        self._log = log
        self._ready_line = ready_line
        self.match: re.Match[str] | None = None
        self.matched = threading.Event()

    def run(self) -> None:
        with self._source, self._log:
            # Keep draining after the match so that a chatty process never blocks on a full pipe.
            for raw in iter(self._source.readline, b""):
                self._log.write(raw)
                self._log.flush()
                if self._ready_line is not None and self.match is None:
                    found = self._ready_line.search(raw.decode("utf-8", "replace"))
                    if found is not None:
                        self.match = found
                        self.matched.set()


@attrs.define
class RunningProcess:
    """A started process: its ``Popen``, log file, and the match of its ready line (if any)."""

    name: str
    args: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log_path: Path
    ready_match: re.Match[str] | None = None
    _pump: _OutputPump | None = None

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log_path.read_text("utf-8", "replace")

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL (to its whole process group) after ``timeout``; the exit code."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._join_pump()
        return self.popen.returncode

    def kill(self) -> int | None:
        """SIGKILL the process and the children in its process group at once; the exit code."""
        if self.popen.poll() is None:
            try:
                # Our own child is its group's leader (start_new_session), so this is by our id.
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()
        self._join_pump()
        return self.popen.returncode

    def signal(self, signum: int) -> None:
        """Send ``signum`` (e.g. SIGHUP) to the process."""
        os.kill(self.popen.pid, signum)

    def _join_pump(self) -> None:
        if self._pump is not None:
            self._pump.join(5)

    def __enter__(self) -> RunningProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _url_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (loopback test URL)
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def start_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    ready_line: str | re.Pattern[str] | None = None,
    ready_url: str | None = None,
    ready_port: int | None = None,
    timeout: float = 20.0,
    name: str | None = None,
    log_dir: str | os.PathLike[str] | None = None,
) -> RunningProcess:
    """Start ``args`` and wait until it is ready.

    ``env`` is added to (and overrides) the current environment. Ready means, for each condition
    given: a line of output matches ``ready_line`` (``RunningProcess.ready_match`` keeps the
    match), ``ready_url`` answers a GET with 2xx, ``ready_port`` on 127.0.0.1 accepts a
    connection. Raises ``ProcessStartError`` (with the log's tail) when the process exits first or
    ``timeout`` seconds pass; the process is stopped then.
    """
    args = tuple(str(a) for a in args)
    name = name or Path(args[0]).name
    directory = Path(log_dir) if log_dir is not None else log_directory()
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{name}-{int(time.time() * 1000)}.log"
    pattern = re.compile(ready_line) if isinstance(ready_line, str) else ready_line
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    popen = subprocess.Popen(
        args,
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert popen.stdout is not None
    pump = _OutputPump(popen.stdout, log_path.open("wb"), pattern)
    pump.start()
    process = RunningProcess(name, args, popen, log_path, pump=pump)

    deadline = time.monotonic() + timeout
    line_ok = pattern is None
    url_ok = ready_url is None
    port_ok = ready_port is None
    while True:
        line_ok = line_ok or pump.matched.is_set()
        url_ok = url_ok or (ready_url is not None and _url_ready(ready_url))
        port_ok = port_ok or (ready_port is not None and _port_ready(ready_port))
        if line_ok and url_ok and port_ok:
            process.ready_match = pump.match
            return process
        if popen.poll() is not None:
            pump.join(5)
            raise ProcessStartError(
                f"{name} exited with {popen.returncode} before it was ready; log {log_path}:\n"
                + _log_tail(log_path)
            )
        if time.monotonic() > deadline:
            process.stop()
            raise ProcessStartError(
                f"{name} not ready after {timeout} s; log {log_path}:\n" + _log_tail(log_path)
            )
        # Wait for the ready line without polling when that is all that is missing.
        pump.matched.wait(_READY_POLL)


# --- the OpenID provider (npm oidc-provider) -------------------------------------------------


def ensure_oidc_fixture() -> Path:
    """The directory of the node OpenID provider, or skip the test if it is not installed.

    CI runs ``npm ci`` in tests/oidc; there (``CI`` set) a missing install fails instead of
    skipping, so that the real-IdP tests cannot silently stop running.
    """
    missing = None
    if shutil.which("node") is None:
        missing = "node is not installed"
    elif not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        missing = f"oidc-provider is not installed: run `npm ci` in {OIDC_DIR}"
    if missing is not None:
        if os.environ.get("CI"):
            raise AssertionError(missing)
        raise unittest.SkipTest(missing)
    return OIDC_DIR


@attrs.frozen
class OIDCClient:
    """A client registered at the test OpenID provider (oidc-provider client metadata)."""

    client_id: str
    client_secret: str | None
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    token_endpoint_auth_method: str = "client_secret_basic"

    def metadata(self) -> dict[str, object]:
        """The client as oidc-provider's ``clients`` configuration entry."""
        data: dict[str, object] = {
            "client_id": self.client_id,
            "redirect_uris": list(self.redirect_uris),
            "grant_types": list(self.grant_types),
            "response_types": ["code"],
            "token_endpoint_auth_method": self.token_endpoint_auth_method,
        }
        if self.client_secret is not None:
            data["client_secret"] = self.client_secret
        return data


@attrs.frozen
class OIDCProvider:
    """A running test OpenID provider: its issuer URL and process."""

    issuer: str
    process: RunningProcess

    @property
    def port(self) -> int:
        """The port it listens on, on 127.0.0.1."""
        return int(self.issuer.rsplit(":", 1)[1].split("/", 1)[0])

    def stop(self) -> int | None:
        """Stop the provider (SIGTERM); all its sessions, grants and tokens are lost."""
        return self.process.stop()


def generate_oidc_jwks() -> dict[str, list[dict[str, str]]]:
    """A private JWKS (one RSA key, RS256) for ``start_oidc_provider(jwks=...)``.

    Passing the same JWKS to a restarted provider keeps its ``kid`` and signatures stable.
    """
    from jwcrypto import jwk

    key = jwk.JWK.generate(kty="RSA", size=2048, alg="RS256", use="sig")
    key["kid"] = key.thumbprint()  # type: ignore[index]
    return {"keys": [json.loads(key.export_private())]}


def start_oidc_provider(
    clients: Sequence[OIDCClient],
    *,
    port: int = 0,
    access_ttl: int | None = None,
    refresh_ttl: int | None = None,
    jwks: Mapping[str, object] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
) -> OIDCProvider:
    """Start tests/oidc/provider.js on 127.0.0.1 (``port`` 0: any free port) and wait for it.

    Skips the test when the node fixture is not installed (see ``ensure_oidc_fixture``).
    ``access_ttl``/``refresh_ttl`` are token lifetimes in seconds; ``jwks`` (a private JWKS) keeps
    the signing keys across restarts.
    """
    directory = ensure_oidc_fixture()
    env = {"PORT": str(port), "OIDC_CLIENTS": json.dumps([c.metadata() for c in clients])}
    if access_ttl is not None:
        env["ACCESS_TTL"] = str(access_ttl)
    if refresh_ttl is not None:
        env["REFRESH_TTL"] = str(refresh_ttl)
    if jwks is not None:
        env["OIDC_JWKS"] = json.dumps(jwks)
    node = shutil.which("node") or "node"
    process = start_process(
        [node, str(directory / "provider.js")],
        env=env,
        cwd=directory,
        ready_line=r"^listening (\S+)",
        timeout=timeout,
        name="oidc-provider",
        log_dir=log_dir,
    )
    assert process.ready_match is not None
    return OIDCProvider(process.ready_match.group(1), process)


# --- the MCP server (tests/e2e/mcp_server.py) ------------------------------------------------


@attrs.frozen
class MCPServerProcess:
    """A running test MCP server: its endpoint URL (``.../mcp`` or ``.../sse``) and process."""

    url: str
    transport: str
    process: RunningProcess

    @property
    def port(self) -> int:
        """The port it listens on, on 127.0.0.1."""
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, what authproxy's ``backend.url`` is set to."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int | None:
        """Stop the server (SIGTERM)."""
        return self.process.stop()


def mcp_server_command(
    port: int = 0, transport: str = "streamable-http", *, allow_any_host: bool = False
) -> list[str]:
    """The command line that runs the test MCP server (e.g. for authproxy's backend.command)."""
    command = [
        sys.executable,
        "-m",
        "tests.e2e.mcp_server",
        "--port",
        str(port),
        "--transport",
        transport,
    ]
    if allow_any_host:
        command.append("--allow-any-host")
    return command


def start_mcp_server(
    transport: str = "streamable-http",
    *,
    port: int = 0,
    allow_any_host: bool = False,
    log_dir: str | os.PathLike[str] | None = None,
    timeout: float = 20.0,
) -> MCPServerProcess:
    """Start the test MCP server on 127.0.0.1 (``port`` 0: any free port) and wait for it."""
    process = start_process(
        mcp_server_command(port, transport, allow_any_host=allow_any_host),
        cwd=REPO_ROOT,
        env={
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
            )
        },
        ready_line=r"^listening (\S+)",
        timeout=timeout,
        name=f"mcp-server-{transport}",
        log_dir=log_dir,
    )
    assert process.ready_match is not None
    return MCPServerProcess(process.ready_match.group(1), transport, process)
