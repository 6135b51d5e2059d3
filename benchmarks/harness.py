"""The authproxy benchmarks P1-P5: every figure against a baseline measured in the same run.

Placement (2 cores): authproxy, and each baseline proxy in its turn (ReverseProxyResource,
nginx, oidc-provider), run alone on core 0; the backends (nginx answering P1's POST,
backend.py for streams), wrk, and this harness (with its asyncio load generators) share
core 1. Every baseline is measured with exactly the same placement, so the ratios compare
the proxies, not the machine. Run through ``benchmarks/run``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import flows
import profiling
import sse
from backend import RESULT
from httpclient import Connection, Response, build_request, chained, fixed_rate
from keydir import KubeletDir, new_ec_key_pem, rotate_signing_keys

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = Path(sys.executable).parent
PROXY_CORE = "0"
LOAD_CORE = "1"
HOST = "127.0.0.1"
MCP_PATH = "/mcp"
RESULTS = HERE / "results"
README = HERE / "README.md"
TABLE_BEGIN = "<!-- latest table: begin (written by benchmarks/run) -->"
TABLE_END = "<!-- latest table: end -->"

TARGETS = {
    "P1_rps_vs_rpr": 2.0,
    "P1_added_p99_ms": 2.0,
    "P1_access_log": 0.90,
    "P2_events_ratio": 0.5,
    "P2_added_p99_ms": 1.0,
    "P3_refresh_per_s": 1500.0,
    "P1_redis_rps_vs_memory": 0.95,
    "P3_redis_refresh_per_s": 1000.0,
    "P4_kib_per_stream": 40.0,
    "P5_failed": 0,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Proc:
    """A child process on a pinned core, its output in a log file."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        core: str,
        workdir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            ["taskset", "-c", core, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    async def wait_line(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.popen.poll() is not None:
                break
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start:\n{self.output()[-3000:]}")

    async def wait_http(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            try:
                status = await asyncio.to_thread(_http_status, url)
                if 200 <= status < 300:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url}:\n{self.output()[-3000:]}")

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)  # our own child leads its group
                self.popen.wait()
        self._log.close()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def steal_ms() -> dict[str, float]:
    """Per core, the time the hypervisor has run something else while this VM wanted the CPU.

    ``/proc/stat`` counts it in USER_HZ ticks (the 8th figure of each ``cpuN`` line). A
    latency round during which core 0 was stolen for milliseconds measured the host, not
    the proxy: the rounds record it so the table can say so.
    """
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0].startswith("cpu") and fields[0] != "cpu" and len(fields) > 8:
            out["core" + fields[0][3:]] = int(fields[8]) * tick_ms
    return out


async def with_steal(awaitable: Any) -> tuple[Any, dict[str, float]]:
    """The awaitable's result, and the steal per core while it ran."""
    before = steal_ms()
    result = await awaitable
    after = steal_ms()
    return result, {core: after[core] - before.get(core, 0.0) for core in after}


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break

    def version(args: list[str]) -> str:
        try:
            out = subprocess.run(args, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    import twisted

    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "wrk": version(["wrk", "--version"]),
        "nginx": version(["nginx", "-v"]),
        "node": version(["node", "--version"]),
    }


# --- the processes -------------------------------------------------------------------------


# One load generator on 127.0.0.1 stands for thousands of clients (P4: 2000 idle streams),
# every workload uses one token, and P3 redeems and refreshes as fast as it can from one
# client and one address: the caps and limits meant for real clients would refuse them.
SERVER_CAPS = "max_connections = 100000\nmax_connections_per_source = 100000"
BACKEND_CAPS = "max_connections = 100000\nmax_connections_per_grant = 100000"
TOKEN_RATES = 'token_rate = "100000000/min"\ntoken_source_rate = "100000000/min"'


def _knows(tree: Path, key: str) -> bool:
    """Whether the authproxy source ``tree`` has the configuration key ``key`` (an A/B of an
    older tree must not be handed keys it would refuse)."""
    return key in (tree / "authproxy" / "config.py").read_text()


def logger_factory(tree: Path) -> str:
    """The ``--logger`` factory of the authproxy source ``tree`` (it moved to ops/)."""
    ops = (tree / "authproxy" / "ops" / "logs.py").exists()
    return "authproxy.ops.logs.observer" if ops else "authproxy.logs.observer"


NO_ACCESS_LOG = """level = "{log_level}"
access_log = false  # like the baselines (nginx: access_log off)"""
ACCESS_LOG = "# the defaults: level info, access log on"


def authproxy_config(
    workdir: Path,
    port: int,
    backend_port: int,
    log_level: str,
    tree: Path = REPO,
    storage: str = "",
    access_log: bool = False,
) -> Path:
    """The benchmarked configuration; ``access_log``: the default access log (level info)
    instead of none, for P1's access-log row."""
    public = f"http://{HOST}:{port}"
    config = workdir / f"authproxy-{port}.toml"
    caps = _knows(tree, "max_connections_per_source")
    token_rates = _knows(tree, "token_source_rate")
    config.write_text(
        f"""
[server]
listen = ["tcp:{port}:interface={HOST}:backlog=1024"]
public_url = "{public}"
{SERVER_CAPS if caps else ""}
[backend]
url = "http://{HOST}:{backend_port}"
path = "{MCP_PATH}"
{BACKEND_CAPS if caps else ""}
[auth_server]
signing_keys_dir = "{workdir / "keys"}"
hmac_secrets_dir = "{workdir / "hmac"}"
consent = "skip"
# P3 prepares thousands of logins from 127.0.0.1 (not timed); the per-address limit would refuse them
authorize_rate = "1000000/min"
{TOKEN_RATES if token_rates else ""}
[auth_server.registration]
rate = "100/min"

[upstream]
type = "development"

[logging]
{ACCESS_LOG if access_log else NO_ACCESS_LOG.format(log_level=log_level)}
{storage}
"""
    )
    return config


def redis_storage(port: int) -> str:
    """The ``[storage]`` section of an authproxy on the benchmarks' redis-server."""
    return f'[storage]\ntype = "redis"\nurl = "redis://{HOST}:{port}/0"\nkey_prefix = "bench:"\n'


@attrs.define
class Launched:
    """A running authproxy with a registered client and an access token of its own."""

    proc: Proc
    port: int
    client: flows.AuthproxyClient
    token: str


def _nginx_conf(workdir: Path, name: str, http: str) -> Path:
    """A foreground, single-worker nginx with its files under ``workdir/name``."""
    root = workdir / name
    root.mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    temp = "\n".join(
        f"  {kind}_temp_path {root / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {root / "nginx.pid"};
error_log {root / "error.log"} warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  # nginx closes a client connection after 1,000 requests by default; authproxy never does,
  # and the open-loop generator counts a closed connection's requests as failed
  keepalive_requests 1000000;
{temp}
{http}
}}
"""
    )
    return conf


def nginx_config(workdir: Path, port: int, backend_port: int) -> Path:
    """nginx as the baseline proxy: ``proxy_pass`` with upstream keep-alive."""
    return _nginx_conf(
        workdir,
        "nginx",
        f"""
  upstream backend {{
    server {HOST}:{backend_port};
    keepalive 32;
  }}
  server {{
    listen {HOST}:{port} backlog=1024;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}""",
    )


def json_backend_config(workdir: Path, port: int) -> Path:
    """nginx as P1's fast backend: every request gets backend.py's JSON-RPC result."""
    return _nginx_conf(
        workdir,
        "json-backend",
        f"""
  server {{
    listen {HOST}:{port} backlog=1024;
    location / {{
      default_type application/json;
      return 200 '{RESULT.decode()}';
    }}
  }}""",
    )


class Bench:
    """One run: the processes, the measurements, the results."""

    def __init__(self, options: argparse.Namespace) -> None:
        self.o = options
        self.workdir = Path(tempfile.mkdtemp(prefix="authproxy-bench-"))
        self.procs: list[Proc] = []
        self.results: dict[str, Any] = {}
        self.backend_port = free_port()  # backend.py: streams (P2, P4)
        self.json_backend_port = free_port()  # nginx: the JSON-RPC answer (P1, P5)
        self.token = ""
        self.client: flows.AuthproxyClient | None = None
        self.authproxy: Proc | None = None
        self.authproxy_port = 0
        self.authproxy_backend = 0  # the port of the backend the running authproxy relays to
        self.refresh_seeds: list[str] = []
        self.nginx_port = 0
        # the same authproxy on Redis storage (redis-server on the load core, like any
        # server authproxy talks to); measured beside the memory one in P1 and P3
        self.on_redis: Launched | None = None
        self.redis_port = 0

    def start(self, *args: Any, **kwargs: Any) -> Proc:
        proc = Proc(*args, workdir=self.workdir, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()

    async def start_backend(self) -> None:
        backend = self.start(
            "backend",
            [sys.executable, str(HERE / "backend.py"), "--port", str(self.backend_port)],
            LOAD_CORE,
        )
        await backend.wait_line(r"listening \d+")
        conf = json_backend_config(self.workdir, self.json_backend_port)
        json_backend = self.start(
            "json-backend", ["nginx", "-c", str(conf), "-p", str(conf.parent)], LOAD_CORE
        )
        await json_backend.wait_http(f"http://{HOST}:{self.json_backend_port}/health")

    def init_keys(self) -> None:
        KubeletDir(self.workdir / "keys").publish({"key-0.pem": new_ec_key_pem()})
        KubeletDir(self.workdir / "hmac").publish({"hmac-0": secrets.token_hex(32).encode()})

    async def start_authproxy(self, source: Path | None = None, backend_port: int = 0) -> None:
        """Start authproxy (from the ``source`` tree instead of the installed one if given)
        in front of ``backend_port`` (default: backend.py), register a client and get a
        token through the real endpoints."""
        self.authproxy_backend = backend_port = backend_port or self.backend_port
        launched = await self.launch(backend_port, source)
        self.authproxy, self.authproxy_port = launched.proc, launched.port
        self.client, self.token = launched.client, launched.token
        header = self.token.split(".", 1)[0]
        self.results["access_token_alg"] = json.loads(
            base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        )["alg"]

    async def start_on_redis(self) -> None:
        """Start redis-server (as in production: append-only file) and an authproxy on it."""
        if shutil.which("redis-server") is None:
            log("redis-server is not installed: no Redis storage rows")
            return
        port = free_port()
        redis = self.start(
            "redis-server",
            ["redis-server", "--port", str(port), "--bind", HOST, "--dir", str(self.workdir),
             "--appendonly", "yes", "--save", ""],
            LOAD_CORE,
        )  # fmt: skip
        await redis.wait_line(r"Ready to accept connections")
        self.redis_port = port
        self.on_redis = await self.launch(self.json_backend_port, storage=redis_storage(port))

    async def launch(
        self,
        backend_port: int,
        source: Path | None = None,
        storage: str = "",
        access_log: bool = False,
    ) -> Launched:
        """Start an authproxy, register a client and get a token through the real endpoints."""
        port = free_port()
        tree = source or REPO
        config = authproxy_config(
            self.workdir, port, backend_port, self.o.log_level, tree, storage, access_log
        )
        # the command line of etc/authproxy.service
        command = [
            str(VENV_BIN / "twistd"), "-n", "--pidfile=",
            "--logger", logger_factory(tree),
            "authproxy", "--config", str(config),
        ]  # fmt: skip
        env = {"PYTHONPATH": str(source)} if source is not None else None
        proc = self.start(f"authproxy-{port}", command, PROXY_CORE, env=env, cwd=self.workdir)
        await proc.wait_http(f"http://{HOST}:{port}/health")
        try:
            await proc.wait_http(f"http://{HOST}:{port}/ready", timeout=10)
        except RuntimeError:
            log("authproxy /ready did not turn 200 in 10 s; going on")
        public = f"http://{HOST}:{port}"
        client = flows.AuthproxyClient(HOST, port, public, public + MCP_PATH)
        await client.register()
        token = (await client.tokens())["access_token"]
        # one request through the guard: the token works end to end
        conn = await Connection.open(HOST, port)
        response = await conn.request(self.p1_request(port, token))
        conn.close()
        if response.status != 200:
            # the P3 token measurements still make sense; P1, P2, P4 and P5 will fail loudly
            log(f"WARNING: proxied request: {response.status} {response.body[:300]!r}")
        return Launched(proc, port, client, token)

    def p1_request(self, port: int, token: str | None) -> bytes:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
        return build_request("POST", MCP_PATH, f"{HOST}:{port}", headers, body)

    # --- wrk ---------------------------------------------------------------------------------

    async def wrk(
        self, port: int, token: str | None, seconds: float, count_status: bool = False
    ) -> dict[str, Any]:
        env = {
            **os.environ,
            "BENCH_TOKEN": token or "",
            "BENCH_COUNT_STATUS": "1" if count_status else "",
        }
        args = [
            "taskset", "-c", LOAD_CORE, "wrk", "-t2", "-c16", f"-d{int(seconds)}s", "--timeout", "10s",
            "-s", str(HERE / "wrk" / "post.lua"), f"http://{HOST}:{port}{MCP_PATH}",
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        text = out.decode()
        found = re.search(r"WRKJSON (\{.*\})", text)
        if not found:
            raise RuntimeError(f"wrk failed:\n{text}")
        result = json.loads(found.group(1))
        result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
        result["errors"] = sum(
            result[k]
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
        )
        return result

    async def relay_to(self, backend_port: int) -> None:
        """Have a running authproxy relay to ``backend_port`` (restarted if it relays elsewhere)."""
        if self.authproxy is not None and self.authproxy_backend != backend_port:
            self.stop(self.authproxy)
            await self.start_authproxy(backend_port=backend_port)

    async def start_nginx(self, backend_port: int) -> tuple[Proc, int]:
        port = free_port()
        conf = nginx_config(self.workdir, port, backend_port)
        nginx = self.start("nginx", ["nginx", "-c", str(conf), "-p", str(conf.parent)], PROXY_CORE)
        await nginx.wait_http(f"http://{HOST}:{port}/health")
        return nginx, port

    async def p1(self) -> None:
        log("P1: small JSON-RPC POST, keep-alive, 16 connections")
        backend_port = self.json_backend_port
        await self.relay_to(backend_port)
        rpr_port = free_port()
        rpr = self.start(
            "rpr",
            [sys.executable, str(HERE / "rpr_proxy.py"), "--port", str(rpr_port),
             "--backend-port", str(backend_port)],
            PROXY_CORE,
        )  # fmt: skip
        nginx, nginx_port = await self.start_nginx(backend_port)
        await rpr.wait_line(r"listening")

        # (name, port, bearer); only one of them is loaded at a time, the others sit idle
        targets: list[tuple[str, int, str | None]] = [
            ("direct", backend_port, None),
            ("rpr", rpr_port, None),
            ("nginx", nginx_port, None),
        ]
        logged: Proc | None = None
        if self.authproxy is not None:
            targets.append(("authproxy", self.authproxy_port, self.token))
        # throughput only: the latency rounds compare proxies, not stores or log settings
        loaded = [*targets]
        if self.on_redis is not None:
            loaded.append(("authproxy_redis", self.on_redis.port, self.on_redis.token))
        if self.authproxy is not None:
            # the same daemon with the default access log (level info, a line per request)
            with_log = await self.launch(backend_port, access_log=True)
            logged = with_log.proc
            loaded.append(("authproxy_access_log", with_log.port, with_log.token))
        for _, port, token in loaded:
            await self.wrk(port, token, 1)  # warm-up: connections, caches, first allocations
        # CPU per request of the two daemons the access-log row compares: what another
        # process on core 0 takes away shows in requests/s, hardly in CPU per request
        metered = {"authproxy": self.authproxy, "authproxy_access_log": logged}
        cpu_us: dict[str, float] = {}
        # rounds interleave the targets, so a burst of noise on the machine hits them alike
        out: dict[str, Any] = {}
        for _ in range(self.o.rounds):
            for name, port, token in loaded:
                proc = metered.get(name)
                before = cpu_seconds(proc.pid) if proc is not None else 0.0
                result = await self.wrk(port, token, self.o.seconds)
                note = ""
                if proc is not None:
                    used = (cpu_seconds(proc.pid) - before) * 1e6 / max(1, result["requests"])
                    cpu_us[name] = min(used, cpu_us.get(name, used))
                    note = f", CPU {used:.0f} µs/request"
                log(f"  {name}: {result['rps']:.0f} req/s, errors {result['errors']}{note}")
                if name not in out or result["rps"] > out[name]["rps"]:
                    out[name] = result
        out["cpu_us_per_request"] = cpu_us

        # latency at half of authproxy's max rate, open loop, the same rate for every target
        # (with a reference server of authproxy's capacity, busy_responder.py); then at a
        # quarter (authproxy and direct only): where the added p99 stands with room
        if logged is not None:
            self.stop(logged)
        best = out["authproxy" if self.authproxy is not None else "rpr"]["rps"]
        twin, twin_port, out["twin"] = await self.start_twin(best)
        twin_target = ("twin", twin_port, None)
        out["latency"] = await self.p1_latency([*targets, twin_target], round(best / 2))
        self.stop(twin)
        quarter = [t for t in targets if t[0] in ("direct", "authproxy")]
        out["latency_quarter"] = await self.p1_latency(quarter, round(best / 4))
        self.stop(rpr)
        self.stop(nginx)
        self.results["P1"] = out
        if self.o.profile and self.authproxy is not None:
            await self.profiled("P1", self.wrk(self.authproxy_port, self.token, self.o.seconds + 2))

    async def start_twin(self, rps: float) -> tuple[Proc, int, dict[str, Any]]:
        """busy_responder.py on core 0 with the work per request that makes its max rate
        ``rps``: its cost with no work and with some is measured with wrk first."""

        async def start(work: int) -> tuple[Proc, int, float]:
            port = free_port()
            proc = self.start(
                "twin", [sys.executable, str(HERE / "busy_responder.py"), "--port", str(port),
                         "--work", str(work)], PROXY_CORE,
            )  # fmt: skip
            await proc.wait_line(r"listening")
            await self.wrk(port, None, 1)  # warm-up
            return proc, port, (await self.wrk(port, None, 2))["rps"]

        async def start_measured(work: int) -> float:
            proc, _, measured = await start(work)
            self.stop(proc)
            return measured

        # cost per request = base + work * per-iteration: measure at 0 and at a guess, then
        # once more at the first estimate (wrk's noise makes a single step land 10 % off)
        own = await start_measured(0)
        work = 2000
        for _ in range(2):
            measured = await start_measured(work)
            per_iteration = max(1e-9, (1 / measured - 1 / own) / work)
            work = max(1, round((1 / rps - 1 / own) / per_iteration))
        proc, port, twin_rps = await start(work)
        log(f"  reference server: {work} iterations per request, {twin_rps:.0f} req/s")
        return proc, port, {"work": work, "rps": twin_rps}

    async def p1_latency(
        self, targets: list[tuple[str, int, str | None]], rate: int
    ) -> dict[str, Any]:
        """Open-loop latency of each target at ``rate``; per target the quietest round counts."""
        lat: dict[str, Any] = {"rate": rate}
        for _ in range(self.o.rounds):
            for name, port, token in targets:
                result, stolen = await with_steal(
                    fixed_rate(
                        HOST, port, self.p1_request(port, token), rate, self.o.latency_seconds
                    )
                )
                summary = result.summary()
                summary["steal_ms"] = stolen
                log(
                    f"  {name} at {rate}/s: p50 {summary['p50_ms']:.2f} ms, "
                    f"p99 {summary['p99_ms']:.2f} ms, failed {result.failed}, "
                    f"core {PROXY_CORE} stolen {summary['steal_ms'].get('core' + PROXY_CORE, 0):.0f} ms"
                )
                # the quieter round counts (lower p99), as for throughput the better one
                if name not in lat or summary["p99_ms"] < lat[name]["p99_ms"]:
                    lat[name] = summary
        return lat

    # --- P5 ----------------------------------------------------------------------------------

    async def p5(self) -> None:
        log("P5: P1 load while the signing keys are rotated 10 times")
        await self.relay_to(self.json_backend_port)
        keys = KubeletDir(self.workdir / "keys")
        seconds = self.o.rotations + 2
        load = asyncio.ensure_future(
            self.wrk(self.authproxy_port, self.token, seconds, count_status=True)
        )
        observed: list[float] = []
        await asyncio.sleep(1.0)
        for _ in range(self.o.rotations):
            started = time.monotonic()
            before = await self.jwks_kids()
            rotate_signing_keys(keys)
            seen = await self.wait_new_active_key(before[0], timeout=3.0)
            if seen:
                observed.append(time.monotonic() - started)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
        result = await load
        # a fresh token signed by the newest key must work too
        tokens = await self.client.tokens()  # type: ignore[union-attr]
        conn = await Connection.open(HOST, self.authproxy_port)
        fresh = await conn.request(self.p1_request(self.authproxy_port, tokens["access_token"]))
        conn.close()
        failed = result["non2xx"] + result["errors"]
        self.results["P5"] = {
            "wrk": result,
            "rotations": self.o.rotations,
            "rotations_observed": len(observed),
            "max_reload_s": max(observed, default=float("nan")),
            "failed": failed,
            "fresh_token_status": fresh.status,
            "keys_in_ring": len(await self.jwks_kids()),
        }
        log(
            f"  {result['requests']} requests, {failed} failed, "
            f"{len(observed)}/{self.o.rotations} rotations seen in JWKS, new-key token {fresh.status}"
        )

    async def jwks_kids(self) -> list[str]:
        conn = await Connection.open(HOST, self.authproxy_port)
        response = await conn.request(
            build_request("GET", "/.well-known/jwks.json", f"{HOST}:{self.authproxy_port}")
        )
        conn.close()
        return [key["kid"] for key in json.loads(response.body)["keys"]]

    async def wait_new_active_key(self, old_kid: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await self.jwks_kids())[0] != old_kid:
                return True
            await asyncio.sleep(0.05)
        return False

    # --- P2 ----------------------------------------------------------------------------------

    async def p2(self) -> None:
        log("P2: SSE stream of 100-byte events")
        await self.relay_to(self.backend_port)
        out: dict[str, Any] = {}
        count = self.o.events
        # nginx (proxy_pass, the backend sends X-Accel-Buffering: no) on core 0 as well: it
        # shows how much of the added latency any proxy on core 0 gets from the machine
        nginx, self.nginx_port = await self.start_nginx(self.backend_port)
        for name, port, token in self.sse_targets(""):
            await sse.throughput(HOST, port, MCP_PATH, token, 2000)  # warm-up
            best: dict[str, Any] | None = None
            for _ in range(self.o.stream_rounds):
                result = await sse.throughput(HOST, port, MCP_PATH, token, count)
                if result["events"] != count:
                    log(f"  {name}: got {result['events']} of {count} events")
                if best is None or result["events_per_s"] > best["events_per_s"]:
                    best = result
            assert best is not None
            out[name] = best
            log(f"  {name}: {best['events_per_s']:.0f} events/s")
        rate = 1000
        n = int(rate * (1 + self.o.latency_seconds))
        for _ in range(self.o.rounds):
            for name, port, token in self.sse_targets("_latency"):
                result, result["steal_ms"] = await with_steal(
                    sse.latency(HOST, port, MCP_PATH, token, rate, n)
                )
                log(
                    f"  {name} at {rate} events/s: p50 {result['p50_ms']:.3f} ms, "
                    f"p99 {result['p99_ms']:.3f} ms, {_stolen(result)}"
                )
                if name not in out or result["p99_ms"] < out[name]["p99_ms"]:
                    out[name] = result
        self.stop(nginx)
        self.nginx_port = 0
        self.results["P2"] = out
        if self.o.profile and self.authproxy is not None:
            await self.profiled(
                "P2", sse.throughput(HOST, self.authproxy_port, MCP_PATH, self.token, 4 * count)
            )

    def sse_targets(self, suffix: str) -> list[tuple[str, int, str | None]]:
        targets: list[tuple[str, int, str | None]] = [("direct" + suffix, self.backend_port, None)]
        if self.nginx_port:
            targets.append(("nginx" + suffix, self.nginx_port, None))
        if self.authproxy is not None:
            targets.append(("authproxy" + suffix, self.authproxy_port, self.token))
        return targets

    # --- P3 ----------------------------------------------------------------------------------

    async def p3(self) -> None:
        log("P3: token endpoint, ES256")
        out: dict[str, Any] = {}
        self.results["P3"] = out
        if self.client is not None:
            await self.p3_authproxy(self.client, self.authproxy_port, out)
        if self.on_redis is not None:
            out["redis"] = {}
            await self.p3_authproxy(self.on_redis.client, self.on_redis.port, out["redis"])
        oidc = await self.start_oidc()
        if oidc is not None:
            issuer, proc = oidc
            netloc = issuer.split("//", 1)[1]
            host, port = netloc.split(":")
            tokens = await flows.oidc_refresh_tokens(issuer, 16)
            out["oidc_provider"] = await self.refresh_chains(
                host, int(port), tokens, lambda rt: flows.oidc_refresh_request(netloc, rt)
            )
            log(f"  oidc-provider refresh_token: {out['oidc_provider']['per_s']:.0f}/s")
            self.stop(proc)

    async def p3_authproxy(
        self, client: flows.AuthproxyClient, port: int, out: dict[str, Any]
    ) -> None:
        started = time.monotonic()
        codes = await client.codes(self.o.codes)
        log(f"  {len(codes)} authorization codes prepared in {time.monotonic() - started:.1f} s")
        queue = list(reversed(codes))
        refresh_tokens: list[str] = []

        def next_code(index: int, last: Response | None) -> bytes | None:
            if last is not None and last.status == 200:
                refresh_tokens.append(json.loads(last.body)["refresh_token"])
            return client.code_request(queue.pop()) if queue else None

        await asyncio.sleep(0.5)
        before = await self.redis_commandstats()
        redeem = await chained(HOST, port, next_code, 16)
        out["code"] = _chain_summary(redeem)
        on_redis = self.on_redis is not None and port == self.on_redis.port
        if on_redis:
            out["code"]["redis_commands"] = await self.redis_commands_per(redeem.ok, before)
        log(f"  authorization_code: {redeem.rate:.0f}/s ({redeem.ok} ok, {redeem.failed} failed)")

        target = self.on_redis.proc if on_redis and self.on_redis else self.authproxy
        out["refresh"] = await self.refresh_chains(
            HOST, port, refresh_tokens[:16], client.refresh_request, count_redis=on_redis,
            cpu_of=target,
        )  # fmt: skip
        log(
            f"  authproxy refresh_token (port {port}): {out['refresh']['per_s']:.0f}/s, "
            f"{out['refresh'].get('cpu_us_per_grant', 0):.0f} µs CPU per grant"
        )
        if on_redis:
            for kind in ("code", "refresh"):
                log(f"  Redis commands per {kind} grant: {out[kind]['redis_commands']}")
        if self.o.profile and port in (self.authproxy_port, on_redis and port):
            seeds = self.refresh_seeds
            await self.profiled(
                "P3-refresh-redis" if on_redis else "P3-refresh",
                self.refresh_chains(HOST, port, seeds, client.refresh_request),
                self.on_redis.proc if on_redis and self.on_redis else None,
            )

    async def redis_commandstats(self) -> dict[str, int]:
        """Calls per command so far on the benchmarks' redis-server ({} without one)."""
        if not self.redis_port:
            return {}
        cli = await asyncio.create_subprocess_exec(
            "redis-cli", "-h", HOST, "-p", str(self.redis_port), "INFO", "commandstats",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        text, _ = await cli.communicate()
        found = re.findall(r"^cmdstat_(\w+):calls=(\d+)", text.decode(), re.M)
        return {name: int(calls) for name, calls in found}

    async def redis_commands_per(self, grants: int, before: dict[str, int]) -> dict[str, float]:
        """Redis commands per grant since ``before``, by command, and their total."""
        after = await self.redis_commandstats()
        per = {
            name: round((calls - before.get(name, 0)) / max(1, grants), 2)
            for name, calls in sorted(after.items())
            if name not in ("info", "ping") and calls > before.get(name, 0)
        }
        return {**per, "total": round(sum(per.values()), 2)}

    async def refresh_chains(
        self,
        host: str,
        port: int,
        seeds: list[str],
        make: Any,
        count_redis: bool = False,
        cpu_of: Proc | None = None,
    ) -> dict[str, Any]:
        """One chain of single-use refresh tokens per connection (rotation on every grant);
        with ``cpu_of``, that process's CPU time per grant (user + system)."""
        current = list(seeds)

        def next_refresh(index: int, last: Response | None) -> bytes | None:
            if last is not None:
                if last.status != 200:
                    return None  # the chain is broken; counted as a failure
                current[index] = json.loads(last.body)["refresh_token"]
            return make(current[index])

        # a short warm-up on the same chains, then the measurement
        await chained(host, port, next_refresh, len(seeds), duration=1.0)
        before = await self.redis_commandstats() if count_redis else {}
        cpu_before = cpu_seconds(cpu_of.pid) if cpu_of is not None else 0.0
        result = await chained(host, port, next_refresh, len(seeds), duration=self.o.seconds)
        self.refresh_seeds = current
        summary = _chain_summary(result)
        if cpu_of is not None:
            used = cpu_seconds(cpu_of.pid) - cpu_before
            summary["cpu_us_per_grant"] = round(used * 1e6 / max(1, result.ok))
        if count_redis:
            summary["redis_commands"] = await self.redis_commands_per(result.ok, before)
        return summary

    async def profiled(self, name: str, workload: Any, target: Proc | None = None) -> None:
        """Run ``workload`` once more with py-spy sampling ``target`` (default: the authproxy
        on memory storage); write the summary."""
        target = target or self.authproxy
        assert target is not None
        raw = self.workdir / f"profile-{name}.raw"  # collapsed stacks, e.g. for flamegraph.pl
        RESULTS.mkdir(exist_ok=True)
        spy = await profiling.record(target.pid, self.o.seconds, raw, LOAD_CORE)
        await asyncio.sleep(0.5)
        await workload
        await spy.wait()
        summary = profiling.summarise(raw)
        (RESULTS / f"profile-{name}.txt").write_text(summary)
        log(f"  profile of {name} written to {RESULTS / f'profile-{name}.txt'}")

    async def start_oidc(self) -> tuple[str, Proc] | None:
        provider = REPO / "tests" / "oidc" / "provider.js"
        if not (provider.parent / "node_modules" / "oidc-provider").is_dir() or not shutil.which(
            "node"
        ):
            log("  oidc-provider is not installed (npm ci in tests/oidc): skipped")
            return None
        port = free_port()
        proc = self.start(
            "oidc-provider",
            ["node", str(provider), "--port", str(port)],
            PROXY_CORE,
            env={
                "OIDC_CLIENTS": flows.oidc_clients_env(),
                "OIDC_JWKS": flows.oidc_jwks_env(),
                "NODE_ENV": "production",
            },
            cwd=provider.parent,
        )
        found = await proc.wait_line(r"listening (\S+)")
        issuer = found.group(1)
        await proc.wait_http(issuer + "/.well-known/openid-configuration")
        return issuer, proc

    # --- P4 ----------------------------------------------------------------------------------

    async def p4(self) -> None:
        n = self.o.streams
        log(f"P4: {n} concurrent idle SSE streams (fresh authproxy)")
        if self.authproxy is not None:
            self.stop(self.authproxy)
        await self.start_authproxy()
        proxy = self.authproxy
        assert proxy is not None
        # warm-up: the stream code paths run once before the idle baseline is taken
        warm = sse.IdleStreams()
        await warm.open(HOST, self.authproxy_port, MCP_PATH, self.token, 20)
        await self.backend_control("/control/broadcast")
        await warm.wait_broadcast(5)
        warm.close()
        await asyncio.sleep(1.0)
        idle_rss = proxy.rss_kib()
        streams = sse.IdleStreams()
        started = time.monotonic()
        await streams.open(HOST, self.authproxy_port, MCP_PATH, self.token, n)
        open_s = time.monotonic() - started
        await asyncio.sleep(1.0)
        loaded_rss = proxy.rss_kib()
        backend_idle = json.loads((await self.backend_control("/control/stats")).body)["idle"]
        sent = json.loads((await self.backend_control("/control/broadcast")).body)["sent"]
        await streams.wait_broadcast(30)
        streams.close()
        per_stream = (loaded_rss - idle_rss) / max(streams.opened, 1)
        self.results["P4"] = {
            "streams": n,
            "opened": streams.opened,
            "failed": streams.failed,
            "statuses": streams.statuses,
            "open_seconds": open_s,
            "backend_streams": backend_idle,
            "broadcast_sent": sent,
            "broadcast_received": streams.received,
            "idle_rss_kib": idle_rss,
            "loaded_rss_kib": loaded_rss,
            "kib_per_stream": per_stream,
        }
        log(
            f"  opened {streams.opened}/{n} in {open_s:.1f} s; RSS {idle_rss} -> {loaded_rss} KiB "
            f"({per_stream:.1f} KiB/stream); broadcast received by {streams.received}"
        )

    async def backend_control(self, path: str) -> Response:
        conn = await Connection.open(HOST, self.backend_port)
        method = "POST" if path.endswith("broadcast") else "GET"
        response = await conn.request(build_request(method, path, f"{HOST}:{self.backend_port}"))
        conn.close()
        return response

    # --- the run -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        await self.start_backend()
        self.init_keys()
        parts = self.o.only
        if self.o.baselines_only:
            parts = [p for p in parts if p in ("P1", "P2", "P3")]
        else:
            await self.start_authproxy()
            if not self.o.no_redis and {"P1", "P3"} & set(parts):
                await self.start_on_redis()
        for part in parts:
            try:
                await getattr(self, part.lower())()
            except Exception as error:  # noqa: BLE001 (reported in the table; the run goes on)
                log(f"{part} failed:\n{traceback.format_exc()}")
                self.results[part] = {"error": f"{type(error).__name__}: {error}"[:300]}
        self.results["seconds"] = time.monotonic() - started
        return self.results


def _chain_summary(result: Any) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "failed": result.failed,
        "seconds": result.elapsed,
        "per_s": result.rate,
        "statuses": {str(k): v for k, v in result.statuses.items()},
        "first_failure": result.first_failure,
    }


# --- the table ---------------------------------------------------------------------------------


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: value, baseline, ratio, target, met."""
    out: list[dict[str, Any]] = []
    failed = {p for p, r in results.items() if isinstance(r, dict) and "error" in r}
    results = {p: r for p, r in results.items() if p not in failed}

    def row(
        pid: str, metric: str, value: float, baseline: str, ratio: float | None,
        target: str, met: bool | None,
    ) -> None:  # fmt: skip
        out.append(
            {"id": pid, "metric": metric, "value": value, "baseline": baseline,
             "ratio": ratio, "target": target, "met": met}
        )  # fmt: skip

    if "P1" in results and "authproxy" not in results["P1"]:
        p1 = results["P1"]
        row("P1", "requests/s, ReverseProxyResource", p1["rpr"]["rps"],
            f"nginx {p1['nginx']['rps']:.0f}; direct {p1['direct']['rps']:.0f}", None, "", None)  # fmt: skip
    elif "P1" in results:
        p1 = results["P1"]
        ap, rpr, ngx, direct = (p1[k]["rps"] for k in ("authproxy", "rpr", "nginx", "direct"))
        ratio = ap / rpr
        row(
            "P1", "requests/s", ap, f"ReverseProxyResource {rpr:.0f}", ratio, "≥ 2.0×", ratio >= 2.0
        )
        row("P1", "requests/s", ap, f"nginx proxy_pass {ngx:.0f}", ap / ngx, "report", None)
        row("P1", "requests/s", ap, f"backend direct {direct:.0f}", ap / direct, "report", None)
        if "authproxy_redis" in p1:
            on_redis = p1["authproxy_redis"]["rps"]
            ratio = on_redis / ap
            row("P1", "requests/s, Redis storage", on_redis, f"memory storage {ap:.0f}", ratio,
                "≥ 95 %", ratio >= 0.95)  # fmt: skip
        if "authproxy_access_log" in p1:
            logged = p1["authproxy_access_log"]["rps"]
            row("P1", "requests/s with the default access log", logged,
                f"without {ap:.0f}", logged / ap, "≥ 0.90", logged / ap >= TARGETS["P1_access_log"])  # fmt: skip
            cpu = p1.get("cpu_us_per_request", {})
            if {"authproxy", "authproxy_access_log"} <= set(cpu):
                with_log, without = cpu["authproxy_access_log"], cpu["authproxy"]
                row("P1", "CPU µs/request with the default access log (best round)", with_log,
                    f"without {without:.0f}", without / with_log, "report", None)  # fmt: skip
        lat = p1["latency"]
        added = lat["authproxy"]["p99_ms"] - lat["direct"]["p99_ms"]
        row(
            "P1", f"added p99 ms at {lat['rate']}/s (½ max)", added,
            f"direct p99 {lat['direct']['p99_ms']:.2f} ms; {_stolen(lat['authproxy'])}",
            None, "≤ 2 ms", added <= 2.0,
        )  # fmt: skip
        if "latency_quarter" in p1:
            q = p1["latency_quarter"]
            q_added = q["authproxy"]["p99_ms"] - q["direct"]["p99_ms"]
            row("P1", f"added p99 ms at {q['rate']}/s (¼ max)", q_added,
                f"direct p99 {q['direct']['p99_ms']:.2f} ms; {_stolen(q['authproxy'])}",
                None, "report", None)  # fmt: skip
        if "twin" in lat:
            twin = lat["twin"]["p99_ms"] - lat["direct"]["p99_ms"]
            row("P1", f"added p99 ms at {lat['rate']}/s", added,
                f"a Python server of equal capacity ({p1['twin']['rps']:.0f}/s) added {twin:.2f} ms",
                None, "report", None)  # fmt: skip
        for name, label in (("rpr", "ReverseProxyResource"), ("nginx", "nginx")):
            other = lat[name]["p99_ms"] - lat["direct"]["p99_ms"]
            row("P1", f"added p99 ms at {lat['rate']}/s", added,
                f"{label} added {other:.2f} ms", None, "report", None)  # fmt: skip
    if "P2" in results and "authproxy" not in results["P2"]:
        p2 = results["P2"]
        row("P2", "events/s, direct", p2["direct"]["events_per_s"],
            f"p99 {p2['direct_latency']['p99_ms']:.3f} ms at 1000/s", None, "", None)  # fmt: skip
    elif "P2" in results:
        p2 = results["P2"]
        ap, direct = p2["authproxy"]["events_per_s"], p2["direct"]["events_per_s"]
        ratio = ap / direct
        row("P2", "events/s", ap, f"direct {direct:.0f}", ratio, "≥ 50 %", ratio >= 0.5)
        added = p2["authproxy_latency"]["p99_ms"] - p2["direct_latency"]["p99_ms"]
        row("P2", "added p99 ms/event at 1000/s", added,
            f"direct p99 {p2['direct_latency']['p99_ms']:.3f} ms; {_stolen(p2['authproxy_latency'])}",
            None, "≤ 1 ms", added <= 1.0)  # fmt: skip
        if "nginx" in p2:
            ngx = p2["nginx"]["events_per_s"]
            row("P2", "events/s", ap, f"nginx proxy_pass {ngx:.0f}", ap / ngx, "report", None)
            other = p2["nginx_latency"]["p99_ms"] - p2["direct_latency"]["p99_ms"]
            row("P2", "added p99 ms/event at 1000/s", added, f"nginx added {other:.3f} ms",
                None, "report", None)  # fmt: skip
    if "P3" in results and "refresh" not in results["P3"]:
        if "oidc_provider" in results["P3"]:
            node = results["P3"]["oidc_provider"]["per_s"]
            row("P3", "refresh grants/s, oidc-provider", node, "", None, "", None)
    elif "P3" in results:
        p3 = results["P3"]
        refresh = p3["refresh"]["per_s"]
        ok = refresh >= 1500 and p3["refresh"]["failed"] == 0
        alg = results.get("access_token_alg", "?")
        row(
            "P3", f"refresh grants/s ({alg})", refresh, "— (absolute, 1 core)", None, "≥ 1500/s", ok
        )
        if "oidc_provider" in p3:
            node = p3["oidc_provider"]["per_s"]
            row("P3", "refresh grants/s", refresh, f"oidc-provider {node:.0f}", refresh / node,
                "report", None)  # fmt: skip
        row("P3", "code redemptions/s", p3["code"]["per_s"], "— (absolute, 1 core)", None,
            "report", None)  # fmt: skip
        if "redis" in p3:
            on_redis = p3["redis"]["refresh"]["per_s"]
            ok = on_redis >= 1000 and p3["redis"]["refresh"]["failed"] == 0
            row("P3", "refresh grants/s, Redis storage", on_redis, f"memory storage {refresh:.0f}",
                on_redis / refresh, "≥ 1000/s", ok)  # fmt: skip
            if "oidc_provider" in p3:
                node = p3["oidc_provider"]["per_s"]
                row("P3", "refresh grants/s, Redis storage", on_redis, f"oidc-provider {node:.0f}",
                    on_redis / node, "report", None)  # fmt: skip
            row("P3", "code redemptions/s, Redis storage", p3["redis"]["code"]["per_s"],
                f"memory storage {p3['code']['per_s']:.0f}",
                p3["redis"]["code"]["per_s"] / p3["code"]["per_s"], "report", None)  # fmt: skip
    if "P4" in results:
        p4 = results["P4"]
        kib = p4["kib_per_stream"]
        ok = kib <= 40 and p4["broadcast_received"] == p4["streams"]
        row("P4", f"KiB RSS/stream, {p4['streams']} streams", kib,
            f"idle RSS {p4['idle_rss_kib'] / 1024:.1f} MiB", None, "≤ 40 KiB", kib <= 40)  # fmt: skip
        row("P4", "broadcast received", p4["broadcast_received"], f"of {p4['streams']}", None,
            "all", p4["broadcast_received"] == p4["streams"])  # fmt: skip
    if "P5" in results:
        p5 = results["P5"]
        row("P5", f"failed requests, {p5['rotations']} rotations", p5["failed"],
            f"of {p5['wrk']['requests']}; {p5['rotations_observed']} rotations seen",
            None, "0", p5["failed"] == 0 and p5["rotations_observed"] == p5["rotations"])  # fmt: skip
    for pid in sorted(failed):
        out.append(
            {"id": pid, "metric": "run", "value": float("nan"), "baseline": "error (see log)",
             "ratio": None, "target": "completes", "met": False}
        )  # fmt: skip
    return out


def _stolen(summary: dict[str, Any]) -> str:
    stolen = summary.get("steal_ms", {}).get("core" + PROXY_CORE)
    return "steal n/a" if stolen is None else f"core {PROXY_CORE} stolen {stolen:.0f} ms"


def format_table(table: list[dict[str, Any]]) -> str:
    def fmt(value: float) -> str:
        if value != value:  # NaN: the part did not complete
            return "—"
        if isinstance(value, int) or float(value).is_integer():
            return f"{value:.0f}"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"

    lines = [
        "| id | metric | authproxy | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        met = {True: "yes", False: "**NO**", None: ""}[r["met"]]
        lines.append(
            f"| {r['id']} | {r['metric']} | {fmt(r['value'])} | {r['baseline']} | {ratio} "
            f"| {r['target']} | {met} |"
        )
    return "\n".join(lines)


def update_readme(table: str, info: dict[str, Any], when: str) -> None:
    if not README.exists():
        return
    text = README.read_text()
    if TABLE_BEGIN not in text or TABLE_END not in text:
        return
    head, rest = text.split(TABLE_BEGIN, 1)
    _, tail = rest.split(TABLE_END, 1)
    machine_line = (
        f"Run {when} on {info['cpu']} ({info['cores']} cores), Linux {info['kernel']}, "
        f"Python {info['python']}, Twisted {info['twisted']}, {info['wrk']}, {info['nginx']}, "
        f"node {info['node']}; authproxy and each baseline alone on core 0, the backends "
        f"(nginx for P1 and P5, backend.py for streams), wrk and the generators on core 1"
        f"{'; nice ' + str(info['nice']) if info.get('nice') else ''}."
    )
    README.write_text(f"{head}{TABLE_BEGIN}\n{machine_line}\n\n{table}\n{TABLE_END}{tail}")


async def amain(options: argparse.Namespace) -> int:
    if options.nice:
        # inherited by every process started from here: proxies, backend, wrk, node
        os.nice(options.nice)
    bench = Bench(options)
    log(f"work directory {bench.workdir}")
    try:
        results = await bench.run()
    finally:
        bench.stop_all()
    info = machine()
    info["nice"] = options.nice
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    table = rows(results)
    text = format_table(table)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    document = {
        "when": when,
        "machine": info,
        "placement": {"proxy_core": PROXY_CORE, "load_core": LOAD_CORE},
        "options": {k: v for k, v in vars(options).items()},
        "targets": TARGETS,
        "rows": table,
        "results": results,
    }
    out = Path(options.output)
    out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    full = set(options.only) == {"P1", "P2", "P3", "P4", "P5"}
    if options.update_readme and full and not options.baselines_only:
        update_readme(text, info, when)
    if not options.keep:
        shutil.rmtree(bench.workdir, ignore_errors=True)
    return 0 if all(r["met"] is not False for r in table) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", default=["P1", "P5", "P2", "P3", "P4"],
                        choices=["P1", "P2", "P3", "P4", "P5"], help="parts to run, in order")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5, help="each throughput measurement")
    parser.add_argument("--rounds", type=int, default=3, help="best of N throughput rounds")
    parser.add_argument("--stream-rounds", type=int, default=5,
                        help="best of N P2 throughput rounds (each takes 1-3 s; see README)")  # fmt: skip
    parser.add_argument("--latency-seconds", type=float, default=5)
    parser.add_argument("--events", type=int, default=300_000, help="P2 events per stream")
    parser.add_argument("--codes", type=int, default=5000, help="P3 codes to redeem")
    parser.add_argument("--streams", type=int, default=2000, help="P4 idle streams")
    parser.add_argument("--rotations", type=int, default=10, help="P5 key rotations")
    parser.add_argument("--log-level", default="warn", help="authproxy logging.level")
    parser.add_argument("--output", default=str(RESULTS / "latest.json"))
    parser.add_argument("--no-readme", dest="update_readme", action="store_false")
    parser.add_argument("--baselines-only", action="store_true",
                        help="measure the baselines only (no authproxy): to debug the harness")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="after P1, P2 and P3, run them once more under py-spy (results/profile-*)")  # fmt: skip
    parser.add_argument("--nice", type=int, default=0,
                        help="scheduling niceness of every benchmark process (e.g. -10 as root, "
                        "to shield the figures from other work on a shared machine)")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--no-redis", action="store_true",
                        help="skip the Redis storage rows of P1 and P3")  # fmt: skip
    options = parser.parse_args()
    sys.exit(asyncio.run(amain(options)))


if __name__ == "__main__":
    main()
