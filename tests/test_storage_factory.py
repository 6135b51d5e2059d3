"""build_storage: the storage type registry, and config validation against it."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import ConfigError, config_from_mapping
from authproxy.storage import Storage
from authproxy.storage.factory import STORAGE_TYPES, build_storage
from authproxy.storage.memory import MemoryRateCounters

BASE = {
    "server": {"public_url": "http://127.0.0.1:8080"},
    "backend": {"url": "http://127.0.0.1:9"},
    "upstream": {"type": "development"},
}


class BuildStorageTests(SynchronousTestCase):
    def test_memory_is_registered(self) -> None:
        self.assertIn("memory", STORAGE_TYPES)

    def test_memory_storage_built_with_the_configured_caps(self) -> None:
        clock = Clock()
        config = config_from_mapping({**BASE, "storage": {"type": "memory", "max_pending": 7}})
        storage = build_storage(config, clock)
        self.assertIsInstance(storage, Storage)
        self.assertIs(storage.clock, clock)
        self.assertIsInstance(storage.rate_counters, MemoryRateCounters)
        self.assertEqual(storage.upkeep.record_counts()["pending"], 0)

    def test_unknown_type_refused_by_config(self) -> None:
        with self.assertRaises(ConfigError) as raised:
            config_from_mapping({**BASE, "storage": {"type": "cassandra"}})
        self.assertIn('storage.type: "cassandra"', str(raised.exception))

    def test_redis_is_offered(self) -> None:
        storage = {"type": "redis", "url": "redis://127.0.0.1:6379/0"}
        config = config_from_mapping({**BASE, "storage": storage})
        self.assertIn("redis", STORAGE_TYPES)
        self.assertEqual(config.storage.type, "redis")
