"""Log output: JSON lines with fields, level filtering, and no secrets in access lines."""

from __future__ import annotations

import io
import json
import sys

from twisted.logger import Logger, LogLevel, LogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.ops.logs import TwistdLogging, make_observer


class JSONLogTests(SynchronousTestCase):
    def emit(self, fmt: str, level: str) -> str:
        out = io.StringIO()
        publisher = LogPublisher(make_observer(fmt, level, out))
        log = Logger(namespace="authproxy.test", observer=publisher)
        log.debug("hidden {count}", count=1)
        log.info("Reloaded {count} keys", count=3, refresh_token="rt_secret")
        log.error("bad {thing}", thing="x")
        return out.getvalue()

    def test_json_one_object_per_line_with_fields(self) -> None:
        lines = self.emit("json", "info").splitlines()
        self.assertEqual(len(lines), 2)
        first = json.loads(lines[0])
        self.assertEqual(first["message"], "Reloaded 3 keys")
        self.assertEqual(first["level"], "info")
        self.assertEqual(first["namespace"], "authproxy.test")
        self.assertEqual(first["count"], 3)
        self.assertIn("timestamp", first)
        self.assertNotIn("rt_secret", lines[0])
        self.assertEqual(json.loads(lines[1])["level"], "error")

    def test_level_filters_text(self) -> None:
        text = self.emit("text", "error")
        self.assertIn("bad x", text)
        self.assertNotIn("Reloaded", text)

    def test_level_names(self) -> None:
        self.assertEqual(LogLevel.levelWithName("warn"), LogLevel.warn)


class ObserverHintTests(SynchronousTestCase):
    def test_warns_when_json_configured_without_observer(self) -> None:
        from twisted.logger import globalLogPublisher

        from authproxy.ops import logs

        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        handoff = logs.TwistdLogging()
        handoff.warn_if_not_installed("text", "info")
        self.assertEqual(events, [])
        handoff.warn_if_not_installed("json", "info")
        self.assertIn("--logger authproxy.ops.logs.observer", events[-1]["log_format"])
        handoff.observer()
        count = len(events)
        handoff.warn_if_not_installed("json", "debug")
        self.assertEqual(len(events), count)


class AccessStreamTests(SynchronousTestCase):
    def test_access_lines_go_where_the_observer_writes(self) -> None:
        logging = TwistdLogging()
        self.assertIs(logging.access_stream(), sys.stdout)  # twistd's own observer: stdout
        real = io.StringIO()
        self.patch(sys, "stdout", real)
        logging.observer()
        self.patch(sys, "stdout", io.StringIO())  # twistd's LoggingFile, after the observer
        self.assertIs(logging.access_stream(), real)
