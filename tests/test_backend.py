"""Backend supervision: the child gets authproxy's environment minus secrets, is probed for
readiness, restarted when it dies, and its output reaches authproxy's log."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import inlineCallbacks
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from authproxy.config import BackendConfig
from authproxy.supervisor import backend_environment, backend_services, command_argv
from tests.processes import free_port

# A tiny backend: listens, says so, serves until killed.
SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
print("tiny backend up", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""


class EnvironmentTests(SynchronousTestCase):
    def test_secrets_withheld(self) -> None:
        env = backend_environment(
            {"PATH": "/bin", "UPSTREAM_SECRET": "s3", "CREDENTIALS_DIRECTORY": "/run/c"},
            withheld=("UPSTREAM_SECRET",),
        )
        self.assertEqual(env, {"PATH": "/bin"})

    def test_python_placeholder(self) -> None:
        self.assertEqual(command_argv(("{python}", "-m", "x")), [sys.executable, "-m", "x"])


class SupervisionTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def until(self, condition: Callable[[], bool]) -> Any:
        """A bounded wait for an outcome (not a timing assertion)."""
        for _ in range(400):
            if condition():
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail("condition never held")

    @inlineCallbacks
    def test_started_probed_restarted_and_logged(self) -> Any:
        port = free_port()
        config = BackendConfig(
            url=f"http://127.0.0.1:{port}", command=("{python}", "-c", SERVER, str(port))
        )
        lines: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("line"):
                lines.append(str(event["line"]))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        services, probe = backend_services(config, reactor, environ=dict(os.environ))
        assert probe is not None
        for service in services:
            service.startService()

        @inlineCallbacks
        def stop() -> Any:
            for service in services:
                yield service.stopService()
            # procmon cancels its SIGKILL timer when the child has exited on SIGTERM.
            monitor: Any = next(iter(services[0]))
            yield self.until(lambda: not any(c.active() for c in monitor.murder.values()))

        self.addCleanup(stop)
        self.assertFalse(probe()[0])
        yield self.until(lambda: probe()[0])
        monitor: Any = next(iter(services[0]))
        first_pid = monitor.protocols["backend"].transport.pid
        os.kill(first_pid, signal.SIGKILL)
        yield self.until(
            lambda: (
                "backend" in monitor.protocols
                and monitor.protocols["backend"].transport.pid != first_pid
                and probe()[0]
            )
        )
        # The port opens before the child's "up" line has passed through procmon to the log.
        yield self.until(lambda: sum("tiny backend up" in line for line in lines) >= 2)
        self.assertEqual(sum("tiny backend up" in line for line in lines), 2, lines)
