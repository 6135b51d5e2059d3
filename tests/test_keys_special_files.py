"""A FIFO, socket or directory named like a key file never blocks or breaks loading.

A FIFO named ``key-2.pem`` used to freeze the daemon: ``open`` waits for a writer forever,
inside the reactor thread. Loading now ignores, with a logged error naming the file, every
directory entry that is not a regular file after following symlinks, and reads files with
O_NONBLOCK, checking the opened descriptor, so nothing can block.

(Without the fix these tests hang rather than fail; they were run under ``timeout`` to see
that before the fix went in.)
"""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.keys.ring import (
    KeyFileError,
    KeyRing,
    KeySources,
    fingerprint,
    load_hmac_secret,
    load_key_set,
    load_signing_key,
)
from authproxy.keys.watcher import SecretWatcher
from authproxy.testing import KubeletDir, ec_pem, hmac_secret


def write(path: str, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.close(fd)
    return path


class LogCapture:
    def __init__(self, case: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        case.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def errors(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events if e.get("log_level") == LogLevel.error]


class SpecialFilesInKeyDirTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = self.mktemp()
        self.keys = os.path.join(base, "keys")
        self.hmac = os.path.join(base, "hmac")
        os.makedirs(self.keys)
        os.makedirs(self.hmac)
        write(os.path.join(self.keys, "key-0.pem"), ec_pem())
        write(os.path.join(self.keys, "key-1.pem"), ec_pem())
        write(os.path.join(self.hmac, "hmac-0"), hmac_secret())
        self.sources = KeySources(signing_keys_dir=self.keys, hmac_secrets_dir=self.hmac)

    def test_fifo_is_ignored_with_an_error(self) -> None:
        fifo = os.path.join(self.keys, "key-2.pem")
        os.mkfifo(fifo, 0o600)
        logs = LogCapture(self)
        ring = KeyRing.load(self.sources)
        self.assertEqual(len(ring.signing_keys), 2)
        self.assertEqual(
            [os.path.basename(p) for p in self.sources.signing_files()],
            ["key-0.pem", "key-1.pem"],
        )
        errors = logs.errors()
        self.assertEqual(len(errors), 1, errors)
        self.assertIn(fifo, errors[0])
        self.assertIn("not a regular file", errors[0])

    def test_fifo_hmac_secret_and_fingerprint_do_not_block(self) -> None:
        os.mkfifo(os.path.join(self.hmac, "hmac-1"), 0o600)
        keyset = load_key_set(self.sources)
        self.assertEqual(len(keyset.hmac_secrets), 1)
        self.assertEqual(len(keyset.ignored), 1)
        fingerprint(self.sources)  # returns: the watcher's poll reads the same files

    def test_socket_and_directory_are_ignored(self) -> None:
        os.mkdir(os.path.join(self.keys, "key-3.pem"))
        # AF_UNIX paths are short: bind relative to the directory.
        cwd = os.getcwd()
        os.chdir(self.keys)
        try:
            sock = socket.socket(socket.AF_UNIX)
            self.addCleanup(sock.close)
            sock.bind("key-4.pem")
        finally:
            os.chdir(cwd)
        keyset = load_key_set(self.sources)
        self.assertEqual(len(keyset.signing_keys), 2)
        self.assertEqual(len(keyset.ignored), 2)

    def test_explicitly_listed_fifo_is_a_clear_error(self) -> None:
        fifo = os.path.join(self.keys, "listed.pem")
        os.mkfifo(fifo, 0o600)
        for load in (load_signing_key, load_hmac_secret):
            e = self.assertRaises(KeyFileError, load, fifo)
            self.assertEqual(e.path, fifo)
            self.assertIn("not a regular file", e.reason)

    def test_symlinks_to_regular_files_still_load(self) -> None:
        # Kubernetes Secret volumes: key-0.pem -> ..data/key-0.pem -> ..<timestamp>/key-0.pem
        kube = KubeletDir(os.path.join(self.mktemp(), "secret"))
        kube.publish({"key-0.pem": ec_pem(), "hmac-0": hmac_secret()})
        os.mkfifo(os.path.join(kube.path, "key-1.pem"), 0o600)
        sources = KeySources(signing_keys_dir=kube.path, hmac_secrets_dir=kube.path)
        keyset = load_key_set(sources)
        self.assertEqual(len(keyset.signing_keys), 1)
        self.assertEqual(len(keyset.ignored), 1)

    def test_watcher_reload_logs_a_new_fifo_once(self) -> None:
        clock = Clock()
        ring = KeyRing.load(self.sources)
        watcher = SecretWatcher(
            ring=ring, sources=self.sources, clock=clock, use_inotify=False, debounce=0.5
        )
        watcher.startService()
        self.addCleanup(watcher.stopService)
        logs = LogCapture(self)
        os.mkfifo(os.path.join(self.keys, "key-2.pem"), 0o600)
        for _ in range(5):
            clock.advance(watcher.poll_interval)
        errors = logs.errors()
        self.assertEqual(len(errors), 1, errors)  # the FIFO alone is noticed and reported
        self.assertIn("key-2.pem", errors[0])
        write(os.path.join(self.keys, "key-3.pem"), ec_pem())
        for _ in range(5):
            clock.advance(watcher.poll_interval)
        self.assertEqual(len(ring.signing_keys), 3)
        self.assertEqual(len(logs.errors()), 1)  # and only once
