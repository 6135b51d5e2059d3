"""The backend MCP server as authproxy sees it: optionally supervised, and probed for readiness.

With ``backend.command`` authproxy starts the server as a child process through
twisted.runner.procmon (restarted with backoff when it dies, its output relayed to
authproxy's log) and ``/ready`` waits until it accepts TCP connections. The child runs
through ``authproxy.ops.pdeathsig``: a process group of its own, which is what is stopped
(SIGTERM, then SIGKILL), and a SIGTERM from the kernel when authproxy dies however it dies.
Readiness asks the process too, not only the port: a port answered by a stray process
(an orphan of an earlier run) while our backend crash-loops on ``EADDRINUSE`` is not ready. Without a command
authproxy only connects, and the backend's health is not part of readiness: a backend that
is down answers 502 per request, which is the proxy's job to report.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.runner.procmon import ProcessMonitor

from authproxy.config import BackendConfig
from authproxy.http.tcp_probe import accepts_connections, url_host_port
from authproxy.ops.pdeathsig import wrapper_argv

log = Logger()


def backend_host_port(url: str) -> tuple[str, int]:
    """Where the backend listens: its URL's host (loopback if it names none) and port."""
    host, port = url_host_port(url)
    return host or "127.0.0.1", port


def backend_host_header(url: str) -> bytes:
    """The ``Host`` the backend expects: its URL's authority without userinfo.

    MCP SDK servers refuse foreign Host headers (421), so the proxy always sends this one.
    """
    return urlsplit(url).netloc.rpartition("@")[2].encode("ascii")


class BackendProbe(TimerService):
    """Connects to the backend every ``interval`` seconds; ready once a connection succeeds."""

    def __init__(self, reactor: Any, url: str, interval: float = 1.0, timeout: float = 2.0):
        super().__init__(interval, self.probe)
        self.clock = reactor
        self._reactor = reactor
        self._host, self._port = backend_host_port(url)
        self._timeout = timeout
        self.reachable = False

    def probe(self) -> Deferred[None]:
        """Connect once; log when the answer changes."""
        d = accepts_connections(self._reactor, self._host, self._port, self._timeout)
        return d.addCallback(self._answered)

    def _answered(self, reachable: bool) -> None:
        if reachable and not self.reachable:
            log.info("Backend {host}:{port} accepts connections", host=self._host, port=self._port)
        elif self.reachable and not reachable:
            log.warn(
                "Backend {host}:{port} stopped accepting connections",
                host=self._host,
                port=self._port,
            )
        self.reachable = reachable

    def readiness(self) -> tuple[bool, str]:
        return self.reachable, "accepting connections" if self.reachable else "not reachable yet"


class BackendMonitor(ProcessMonitor):
    """A ProcessMonitor for the one backend: stops its process group, waits for it to
    exit when stopping, and says whether it runs steadily.

    A backend that cannot bind its port exits soon after it starts, again and again; one
    whose current run has lasted ``steady_after`` seconds is not doing that.
    """

    name = "backend"

    def __init__(self, reactor: Any, steady_after: float = 2.0) -> None:
        super().__init__(reactor=reactor)
        self.steady_after = steady_after
        self.exits = 0
        self._exited: list[Deferred[None]] = []

    def stopProcess(self, name: str) -> None:
        """SIGTERM to the process group (its pid: pdeathsig made it the leader), SIGKILL
        to the group after ``killTime``."""
        proto = self.protocols.get(name)
        if proto is None or proto.transport is None:
            super().stopProcess(name)
            return
        pid = proto.transport.pid
        if pid is None or not self._signal_group(pid, signal.SIGTERM):
            super().stopProcess(name)
            return
        self.murder[name] = self._clock.callLater(
            self.killTime, self._signal_group, pid, signal.SIGKILL
        )

    @staticmethod
    def _signal_group(pid: int, signum: int) -> bool:
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            return False  # not (yet) a group leader, or gone
        return True

    def _monitoredProcessExited(self, name: str, reason: Failure | None = None) -> None:
        self.exits += 1
        super()._monitoredProcessExited(name, reason)
        waiting, self._exited = self._exited, []
        for d in waiting:
            d.callback(None)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        """Stop the backend; fires once it exited (SIGKILL after ``killTime`` at most)."""
        running = self.name in self.protocols
        super().stopService()
        if not running:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._exited.append(d)
        return d

    def state(self) -> tuple[bool, str]:
        """(steady, why): running, and for ``steady_after`` seconds already."""
        if self.name not in self.protocols:
            return False, f"not running (exited {self.exits} times; restarting)"
        uptime = self._clock.seconds() - self.timeStarted[self.name]
        if uptime < self.steady_after:
            return False, f"started {uptime:.1f}s ago (exited {self.exits} times before)"
        return True, "running"


def supervised_readiness(monitor: BackendMonitor, probe: BackendProbe) -> tuple[bool, str]:
    """Ready when our own process runs steadily and its port accepts connections."""
    steady, why = monitor.state()
    if not steady:
        return False, why
    return probe.readiness()


def command_argv(command: tuple[str, ...]) -> list[str]:
    """``backend.command`` with ``{python}`` replaced by authproxy's own interpreter.

    The demo (and any backend installed into authproxy's virtualenv) can then be started
    without knowing where that virtualenv lives.
    """
    return [sys.executable if part == "{python}" else part for part in command]


def backend_environment(
    environ: Mapping[str, str], withheld: tuple[str, ...] = ()
) -> dict[str, str]:
    """authproxy's environment minus its secrets: the backend needs PATH and friends, not
    the upstream client secret (``upstream.client_secret_env``) or systemd's credentials."""
    hidden = {"CREDENTIALS_DIRECTORY", *withheld}
    return {name: value for name, value in environ.items() if name not in hidden}


def backend_services(
    config: BackendConfig,
    reactor: Any,
    environ: Mapping[str, str] | None = None,
    withheld: tuple[str, ...] = (),
) -> tuple[list[Any], Callable[[], tuple[bool, str]] | None]:
    """The services to run for the backend, and its readiness check.

    ``withheld`` names environment variables the backend must not inherit.
    """
    if not config.command:
        return [], None
    group = MultiService()
    monitor = BackendMonitor(reactor)
    env = backend_environment(os.environ if environ is None else environ, withheld)
    argv = wrapper_argv(sys.executable, os.getpid(), command_argv(config.command))
    monitor.addProcess(monitor.name, argv, env=env)
    monitor.setServiceParent(group)
    probe = BackendProbe(reactor, config.url)
    probe.setServiceParent(group)
    return [group], lambda: supervised_readiness(monitor, probe)
