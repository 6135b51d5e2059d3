"""Graceful shutdown in memory: the order of the phases, the grace, streams ended early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.ops.pdeathsig import main as pdeathsig_main
from authproxy.ops.pdeathsig import wrapper_argv
from authproxy.ops.shutdown import Drain, GracefulService


class FakeChannel:
    def __init__(self, busy: bool) -> None:
        self.requests = [object()] if busy else []
        self.closed = False

    def loseConnection(self) -> None:
        self.closed = True


class Recording(Service):
    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self._events = events

    def stopService(self) -> Any:
        self._events.append(self.name)
        return super().stopService()


class DrainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.stream = FakeChannel(busy=True)
        self.idle = FakeChannel(busy=False)
        self.ended: list[int] = []
        self.drain = Drain(self.clock, {self.stream, self.idle}, self.end_streams, grace=10)

    def end_streams(self) -> int:
        self.stream.requests = []
        self.ended.append(1)
        return 1

    def test_readiness_turns_off_when_draining_begins(self) -> None:
        self.assertTrue(self.drain.readiness()[0])
        self.drain.begin()
        self.assertEqual(self.drain.readiness(), (False, "shutting down"))

    def test_streams_run_for_the_grace_then_are_ended(self) -> None:
        d = self.drain.wait()
        done = ensureDeferred(d)
        self.assertTrue(self.idle.closed, "an idle kept-alive connection stays open")
        self.clock.advance(9.9)
        self.assertNoResult(done)
        self.assertEqual(self.ended, [])
        self.clock.advance(0.2)
        self.assertEqual(self.ended, [1])
        self.successResultOf(done)

    def test_a_stream_ending_by_itself_ends_the_wait_early(self) -> None:
        done = ensureDeferred(self.drain.wait())
        self.clock.advance(1)
        self.stream.requests = []
        self.clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(self.ended, [])


class OrderTests(SynchronousTestCase):
    def test_listeners_then_drain_then_services_then_backend(self) -> None:
        events: list[str] = []
        clock = Clock()
        busy = FakeChannel(busy=True)

        def end_streams() -> int:
            events.append("streams ended")
            busy.requests = []
            return 1

        drain = Drain(clock, {busy}, end_streams, grace=5)
        top = GracefulService(drain)
        for name in ("backend", "watcher", "listener"):
            Recording(name, events).setServiceParent(top)
        top.last.append(top.getServiceNamed("backend"))
        top.listeners.append(top.getServiceNamed("listener"))
        top.startService()
        d = top.stopService()
        self.assertEqual(events, ["listener"])
        self.assertFalse(drain.readiness()[0])
        clock.advance(5.1)
        self.successResultOf(d)
        self.assertEqual(events, ["listener", "streams ended", "watcher", "backend"])


class PdeathsigTests(SynchronousTestCase):
    def test_usage_error_without_a_command(self) -> None:
        self.assertEqual(pdeathsig_main(["--parent", "1"]), 2)
        self.assertEqual(pdeathsig_main(["--", "true"]), 2)

    def test_a_hostile_authproxy_package_in_the_backends_cwd_is_never_imported(self) -> None:
        # The backend's working directory is the wrapper's: a plain ``python -m`` would put
        # it first on sys.path and run its authproxy/ops/pdeathsig.py instead of ours.
        cwd = Path(self.mktemp())
        hijack = cwd / "authproxy" / "ops"
        hijack.mkdir(parents=True)
        marker = cwd / "hijacked"
        for package in (cwd / "authproxy", hijack):
            (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
        (hijack / "pdeathsig.py").write_text("")
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": root}  # the editable/compat install's way in
        argv = wrapper_argv(sys.executable, os.getpid(), [sys.executable, "-c", "print('ran')"])
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=60)
        self.assertFalse(marker.exists(), "the backend's cwd supplied authproxy")
        self.assertEqual((done.returncode, done.stdout), (0, b"ran\n"), done.stderr)
