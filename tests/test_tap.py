"""The twistd plugin: Options, makeService, and the daemon as a real process."""

from __future__ import annotations

import gc
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys.watcher import SecretWatcher
from authproxy.ops import logs
from authproxy.tap import HeapTuning, Options, makeService
from tests.processes import free_port, twistd_authproxy

CONFIG = """
[server]
public_url = "http://127.0.0.1:{port}"
listen = [{listen}]
[backend]
url = "http://127.0.0.1:9"
[upstream]
type = "development"
"""


def write_config(case: SynchronousTestCase, port: int, listen: list[str]) -> str:
    path = Path(case.mktemp() + ".toml")
    path.write_text(CONFIG.format(port=port, listen=", ".join(json.dumps(x) for x in listen)))
    return str(path)


class OptionsTests(SynchronousTestCase):
    def test_config_required(self) -> None:
        self.assertRaises(usage.UsageError, Options().parseOptions, [])

    def test_config_parsed(self) -> None:
        options = Options()
        options.parseOptions(["--config", "/x.toml"])
        self.assertEqual(options["config"], "/x.toml")


class MakeServiceTests(SynchronousTestCase):
    def started(self, path: str) -> MemoryReactorClock:
        """The reactor the service for the configuration at ``path`` listens on, started."""
        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor=reactor)
        service.startService()
        self.addCleanup(service.stopService)
        return reactor

    def test_listens_on_every_endpoint(self) -> None:
        path = write_config(
            self, 8080, ["tcp:8080:interface=127.0.0.1", "tcp:8081:interface=127.0.0.1"]
        )
        reactor = self.started(path)
        ports = sorted((port, interface) for port, _, _, interface in reactor.tcpServers)
        self.assertEqual(ports, [(8080, "127.0.0.1"), (8081, "127.0.0.1")])
        sites = {factory for _, factory, _, _ in reactor.tcpServers}
        self.assertEqual(len(sites), 1, "every endpoint serves one Site")

    def test_metrics_listen_has_a_site_of_its_own(self) -> None:
        path = write_config(self, 8080, ["tcp:8080:interface=127.0.0.1"])
        Path(path).write_text(
            Path(path)
            .read_text()
            .replace("[backend]", 'metrics_listen = "tcp:9100:interface=127.0.0.1"\n[backend]')
        )
        reactor = self.started(path)
        sites = {port: factory for port, factory, _, _ in reactor.tcpServers}
        self.assertEqual(sorted(sites), [8080, 9100])
        self.assertIsNot(sites[8080], sites[9100])

    def test_starting_it_leaves_the_process_alone(self) -> None:
        # With a reactor passed in (tests, embedding), no GC tuning and no logging handoff.
        path = write_config(self, 8080, ["tcp:8080:interface=127.0.0.1"])
        thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
        handoff = (logs.TWISTD.format, logs.TWISTD.level, logs.TWISTD.installed)
        service = makeService({"config": path}, reactor=MemoryReactorClock())
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual((gc.get_threshold(), gc.get_freeze_count()), (thresholds, frozen))
        self.assertEqual((logs.TWISTD.format, logs.TWISTD.level, logs.TWISTD.installed), handoff)
        self.assertFalse(any(isinstance(s, HeapTuning) for s in service))

    def test_twistd_path_tunes_the_heap(self) -> None:
        path = write_config(self, 8080, ["tcp:8080:interface=127.0.0.1"])
        service = makeService({"config": path})  # not started: that would tune this process
        self.assertEqual(sum(isinstance(s, HeapTuning) for s in service), 1)

    def test_only_the_twistd_path_watches_key_files_with_inotify(self) -> None:
        path = write_config(self, 8080, ["tcp:8080:interface=127.0.0.1"])
        daemon = makeService({"config": path})  # not started
        embedded = makeService({"config": path}, reactor=MemoryReactorClock())
        inotify = [
            [s.use_inotify for s in service if isinstance(s, SecretWatcher)]
            for service in (daemon, embedded)
        ]
        self.assertEqual(inotify, [[True], [False]])

    def test_bad_config_exits_1(self) -> None:
        path = Path(self.mktemp() + ".toml")
        path.write_text("[server]\npublic_url = 'nope'\n")
        with self.assertRaises(SystemExit) as caught:
            makeService({"config": str(path)}, reactor=MemoryReactorClock())
        self.assertEqual(caught.exception.code, 1)


class DaemonProcessTests(SynchronousTestCase):
    """twistd -n authproxy as a real process on a free loopback port."""

    def start(self, path: str, *options: str) -> tuple[subprocess.Popen[bytes], Any]:
        """twistd with ``options`` before the plugin, its output in a file."""
        log = open(self.mktemp(), "w+")
        command = twistd_authproxy(path)
        plugin = command.index("authproxy")
        proc = subprocess.Popen(
            [*command[:plugin], *options, *command[plugin:]],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.addCleanup(proc.wait, 10)
        self.addCleanup(proc.terminate)
        return proc, log

    def health(self, proc: subprocess.Popen[bytes], port: int) -> Any:
        """/health's answer once the daemon listens (None if it never does)."""
        for _ in range(200):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    return json.load(r)
            except OSError:
                if proc.poll() is not None:
                    return None
                time.sleep(0.05)
        return None

    def test_serves_health(self) -> None:
        port = free_port()
        path = write_config(self, port, [f"tcp:{port}:interface=127.0.0.1"])
        proc, log = self.start(path)
        body = self.health(proc, port)
        log.seek(0)
        self.assertEqual(body, {"status": "ok"}, log.read())

    def test_access_lines_are_lines_of_their_own(self) -> None:
        # Under twistd, sys.stdout turns each line written into a log event: access lines
        # must bypass it (a second timestamp on every line, a JSON line quoted in another).
        port = free_port()
        path = write_config(self, port, [f"tcp:{port}:interface=127.0.0.1"])
        with open(path, "a") as f:
            f.write('[logging]\nformat = "json"\n')
        proc, log = self.start(path, "--logger", "authproxy.ops.logs.observer")
        self.assertEqual(self.health(proc, port), {"status": "ok"})
        proc.terminate()  # the access log is written out when the service stops
        self.assertEqual(proc.wait(30), 0)
        log.seek(0)
        records = [json.loads(line) for line in log.read().splitlines()]
        access = [r for r in records if r["namespace"] == "authproxy.access"]
        self.assertEqual([(r["path"], r["status"]) for r in access], [("/health", 200)])
        self.assertEqual([r for r in records if r["namespace"] == "stdout"], [])

    def test_broken_config_exits_1_naming_the_field(self) -> None:
        path = Path(self.mktemp() + ".toml")
        path.write_text(
            CONFIG.format(port=1, listen='"tcp:1"').replace(
                "[upstream]", '[auth_server]\naccess_token_lifespan = "90x"\n[upstream]'
            )
        )
        result = subprocess.run(
            twistd_authproxy(path),
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn('auth_server.access_token_lifespan: "90x" is not a duration', result.stderr)
        self.assertNotIn("Traceback", result.stderr)
