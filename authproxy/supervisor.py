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
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.runner.procmon import ProcessMonitor

from authproxy.config import BackendConfig

log = Logger()


def backend_host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "127.0.0.1", parts.port or default


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

    def probe(self) -> Any:
        endpoint = HostnameEndpoint(self._reactor, self._host, self._port, timeout=self._timeout)
        factory = Factory.forProtocol(Protocol)
        factory.noisy = False  # one probe a second would flood the log with factory starts
        d = endpoint.connect(factory)

        def connected(protocol: Protocol) -> None:
            if not self.reachable:
                log.info(
                    "Backend {host}:{port} accepts connections", host=self._host, port=self._port
                )
            self.reachable = True
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        def refused(_: object) -> None:
            if self.reachable:
                log.warn(
                    "Backend {host}:{port} stopped accepting connections",
                    host=self._host,
                    port=self._port,
                )
            self.reachable = False

        d.addCallbacks(connected, refused)
        return d

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
