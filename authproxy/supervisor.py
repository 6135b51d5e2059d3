"""The backend MCP server as authproxy sees it: optionally supervised, and probed for readiness.

With ``backend.command`` authproxy starts the server as a child process through
twisted.runner.procmon (restarted with backoff when it dies, its output relayed to
authproxy's log) and ``/ready`` waits until it accepts TCP connections. Without a command
authproxy only connects, and the backend's health is not part of readiness: a backend that
is down answers 502 per request, which is the proxy's job to report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.runner.procmon import ProcessMonitor

from authproxy.config import BackendConfig
from authproxy.http.tcp_probe import accepts_connections, url_host_port

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
) -> tuple[list[Any], BackendProbe | None]:
    """The services to run for the backend, and the probe to register for readiness.

    ``withheld`` names environment variables the backend must not inherit.
    """
    if not config.command:
        return [], None
    group = MultiService()
    monitor = ProcessMonitor(reactor=reactor)
    env = backend_environment(os.environ if environ is None else environ, withheld)
    monitor.addProcess("backend", command_argv(config.command), env=env)
    monitor.setServiceParent(group)
    probe = BackendProbe(reactor, config.url)
    probe.setServiceParent(group)
    return [group], probe
