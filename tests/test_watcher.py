"""Tests for authproxy.keys.watcher: kubelet-style Secret updates via polling and via inotify."""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from authproxy.keys.ring import KeyRing, KeySources, load_key_set
from authproxy.keys.watcher import SecretWatcher
from authproxy.ops.metrics import AuthproxyMetrics
from authproxy.testing import KubeletDir, ec_pem, ed_pem


def capture_log(test: SynchronousTestCase) -> list[dict]:
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class PollingTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = self.mktemp()
        self.keys = KubeletDir(os.path.join(base, "keys"))
        self.hmac = KubeletDir(os.path.join(base, "hmac"))
        self.first = ec_pem()
        self.keys.publish({"key-0.pem": self.first})
        self.hmac.publish({"hmac-0": b"a" * 32})
        self.sources = KeySources(signing_keys_dir=self.keys.path, hmac_secrets_dir=self.hmac.path)
        self.ring = KeyRing(load_key_set(self.sources))
        self.clock = Clock()
        self.watcher = SecretWatcher(ring=self.ring, sources=self.sources, clock=self.clock)
        self.events = capture_log(self)
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)

    def tick(self) -> None:
        self.clock.advance(self.watcher.poll_interval)
        self.clock.advance(self.watcher.debounce)

    def test_uses_polling_with_a_plain_clock(self) -> None:
        self.assertFalse(self.watcher.watching)
        self.assertEqual(self.watcher.readiness_detail(), {"keys": "ok"})

    def test_unchanged_files_keep_generation(self) -> None:
        for _ in range(3):
            self.tick()
        self.assertEqual(self.ring.generation, 0)

    def test_kubelet_update_is_picked_up(self) -> None:
        old_kid = self.ring.active_signing_key.kid
        self.keys.publish({"key-0.pem": ed_pem(), "key-1.pem": self.first})
        self.hmac.publish({"hmac-0": b"b" * 32, "hmac-1": b"a" * 32})
        self.tick()
        self.assertEqual(self.ring.generation, 1)
        self.assertEqual(self.ring.active_signing_key.alg, "EdDSA")
        self.assertEqual(self.ring.signing_keys[1].kid, old_kid)
        self.assertEqual(self.ring.hmac_secrets, (b"b" * 32, b"a" * 32))
        self.assertEqual([k["kid"] for k in self.ring.jwks()["keys"]][1], old_kid)
        infos = [e for e in self.events if e.get("log_level") == LogLevel.info]
        self.assertEqual((infos[-1]["signing"], infos[-1]["hmac"]), (2, 2))

    def test_broken_update_keeps_ring_then_next_good_is_taken(self) -> None:
        before = self.ring.keyset
        self.keys.publish({"key-0.pem": b"-----BEGIN PRIVATE KEY-----\nTOPSECRET\n"})
        self.tick()
        self.assertIs(self.ring.keyset, before)
        self.assertEqual(self.ring.generation, 0)
        error = self.watcher.last_error
        assert error is not None
        self.assertIn(os.path.join(self.keys.path, "key-0.pem"), error)
        self.assertIn("not a PEM private key", error)
        self.assertNotIn("TOPSECRET", error)
        detail = self.watcher.readiness_detail()["keys"]
        self.assertIn("key-0.pem", detail)
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("key-0.pem", errors[0]["error"])
        # The same broken state is not logged again on every poll.
        self.tick()
        errors = [e for e in self.events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)

        self.keys.publish({"key-0.pem": ed_pem()})
        self.tick()
        self.assertEqual(self.ring.generation, 1)
        self.assertEqual(self.ring.active_signing_key.alg, "EdDSA")
        self.assertIsNone(self.watcher.last_error)
        self.assertEqual(self.watcher.readiness_detail(), {"keys": "ok"})

    def test_reload_metrics_after_a_failed_then_a_good_reload(self) -> None:
        metrics = AuthproxyMetrics()
        metrics.add_key_reloads(self.watcher)

        def gauge(name: str) -> float | None:
            return metrics.registry.get_sample_value(name)

        started = gauge("authproxy_key_reload_last_success_timestamp_seconds")
        self.assertEqual((gauge("authproxy_key_reload_ok"), started), (1, self.clock.seconds()))
        self.keys.publish({"key-0.pem": b"not a key"})
        self.tick()
        self.assertEqual(gauge("authproxy_key_reload_ok"), 0)
        self.assertEqual(gauge("authproxy_key_reload_last_success_timestamp_seconds"), started)
        self.keys.publish({"key-0.pem": ed_pem()})
        self.tick()
        self.assertEqual(gauge("authproxy_key_reload_ok"), 1)
        self.assertEqual(
            gauge("authproxy_key_reload_last_success_timestamp_seconds"), self.clock.seconds()
        )
        self.assertGreater(self.clock.seconds(), started)

    def test_short_hmac_update_reports_file(self) -> None:
        self.hmac.publish({"hmac-0": b"too short"})
        self.tick()
        self.assertEqual(self.ring.generation, 0)
        self.assertIn("hmac-0", self.watcher.last_error or "")
        self.assertIn("at least 32", self.watcher.last_error or "")

    def test_emptied_directory_reports_dir(self) -> None:
        self.keys.publish({})
        self.tick()
        self.assertEqual(self.ring.generation, 0)
        self.assertIn("key-N.pem", self.watcher.last_error or "")

    def test_events_are_debounced(self) -> None:
        self.keys.publish({"key-0.pem": ed_pem()})
        for _ in range(5):
            self.watcher._on_event(None, None, 0)  # type: ignore[arg-type]
        self.assertEqual(self.ring.generation, 0)
        self.clock.advance(self.watcher.debounce)
        self.assertEqual(self.ring.generation, 1)  # one reload, not five

    def test_stop_cancels_timers(self) -> None:
        self.watcher._on_event(None, None, 0)  # type: ignore[arg-type]
        self.assertTrue(self.clock.getDelayedCalls())
        self.watcher.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_explicit_files_through_symlinks(self) -> None:
        sources = KeySources(
            signing_key_files=(os.path.join(self.keys.path, "key-0.pem"),),
            hmac_secret_files=(os.path.join(self.hmac.path, "hmac-0"),),
        )
        ring = KeyRing(load_key_set(sources))
        watcher = SecretWatcher(ring=ring, sources=sources, clock=self.clock, poll_interval=5.0)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        self.keys.publish({"key-0.pem": ed_pem()})
        self.clock.advance(5.0)
        self.clock.advance(watcher.debounce)
        self.assertEqual(ring.generation, 1)
        self.assertEqual(ring.active_signing_key.alg, "EdDSA")


class EphemeralTests(SynchronousTestCase):
    def test_nothing_configured_nothing_watched(self) -> None:
        ring = KeyRing(load_key_set(KeySources()))
        clock = Clock()
        watcher = SecretWatcher(ring=ring, sources=KeySources(), clock=clock)
        watcher.startService()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(120)
        self.assertEqual(ring.generation, 0)
        watcher.stopService()

    def test_ephemeral_hmac_survives_key_reload(self) -> None:
        keys = KubeletDir(self.mktemp())
        keys.publish({"key-0.pem": ec_pem()})
        sources = KeySources(signing_keys_dir=keys.path)
        ring = KeyRing(load_key_set(sources))
        secret = ring.active_hmac_secret
        clock = Clock()
        watcher = SecretWatcher(ring=ring, sources=sources, clock=clock)
        watcher.startService()
        self.addCleanup(watcher.stopService)
        keys.publish({"key-0.pem": ed_pem()})
        clock.advance(watcher.poll_interval)
        clock.advance(watcher.debounce)
        self.assertEqual(ring.generation, 1)
        self.assertEqual(ring.active_hmac_secret, secret)


class INotifyTests(TestCase):
    """The inotify path needs the real reactor; it waits for the ring to change, with a timeout."""

    timeout = 30

    def setUp(self) -> None:
        if not sys.platform.startswith("linux"):
            raise SkipTest("inotify is Linux-only")
        base = self.mktemp()
        self.keys = KubeletDir(os.path.join(base, "keys"))
        self.hmac = KubeletDir(os.path.join(base, "hmac"))
        self.first = ec_pem()
        self.keys.publish({"key-0.pem": self.first})
        self.hmac.publish({"hmac-0": b"a" * 32})
        self.sources = KeySources(signing_keys_dir=self.keys.path, hmac_secrets_dir=self.hmac.path)
        self.ring = KeyRing(load_key_set(self.sources))
        # Polls far apart: only inotify can notice the update before the timeout.
        self.watcher = SecretWatcher(
            ring=self.ring,
            sources=self.sources,
            clock=reactor,
            use_inotify=True,
            debounce=0.05,
            poll_interval=3600.0,
            safety_poll_interval=3600.0,
        )
        self.watcher.startService()
        self.addCleanup(self.watcher.stopService)
        if not self.watcher.watching:
            raise SkipTest("inotify is not available here")

    def next_generation(self) -> Deferred[int]:
        """The generation of the watcher's next reload, as it logs it."""
        d: Deferred[int] = Deferred()

        def observe(event: dict) -> None:
            if event.get("log_source") is self.watcher and "generation" in event:
                if not d.called:
                    d.callback(event["generation"])

        globalLogPublisher.addObserver(observe)
        d.addBoth(lambda result: (globalLogPublisher.removeObserver(observe), result)[1])
        d.addTimeout(10, reactor)
        return d

    async def test_kubelet_update_is_picked_up(self) -> None:
        old_kid = self.ring.active_signing_key.kid
        changed = self.next_generation()
        self.keys.publish({"key-0.pem": ed_pem(), "key-1.pem": self.first})
        generation = await changed
        self.assertEqual(generation, 1)
        self.assertEqual(self.ring.active_signing_key.alg, "EdDSA")
        self.assertEqual(self.ring.signing_keys[1].kid, old_kid)

    async def test_broken_then_good_update(self) -> None:
        errored: Deferred[None] = Deferred()

        def observe(event: dict) -> None:
            if event.get("log_level") == LogLevel.error and not errored.called:
                errored.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        errored.addTimeout(10, reactor)
        self.hmac.publish({"hmac-0": b"short"})
        await errored
        self.assertEqual(self.ring.generation, 0)
        self.assertIn("hmac-0", self.watcher.last_error or "")

        changed = self.next_generation()
        self.hmac.publish({"hmac-0": b"c" * 40})
        self.assertEqual(await changed, 1)
        self.assertEqual(self.ring.active_hmac_secret, b"c" * 40)
        self.assertIsNone(self.watcher.last_error)
