"""ClientCache: used clients for at most max_age after the read, never past their expiry."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage.models import RegisteredClient
from authproxy.storage.redis.client_cache import ClientCache
from tests.storage_conformance import START, make_client


def used(name: str = "client-1", at: float = START) -> RegisteredClient:
    return make_client(name, created_at=START, last_used_at=at)


class ClientCacheTests(SynchronousTestCase):
    def test_serves_a_used_client_until_max_age(self) -> None:
        cache = ClientCache(unused_client_ttl=None, max_age=5.0)
        cache.keep(used(), START)
        self.assertEqual(cache.get("client-1", START + 4.9), used())
        self.assertIsNone(cache.get("client-1", START + 5))
        self.assertIsNone(cache.get("client-1", START + 1))  # dropped, not revived

    def test_never_used_clients_are_not_cached(self) -> None:
        cache = ClientCache(unused_client_ttl=None)
        cache.keep(make_client(), START)
        self.assertIsNone(cache.get("client-1", START))

    def test_not_served_past_its_expiry(self) -> None:
        cache = ClientCache(unused_client_ttl=100.0, max_age=5.0)
        cache.keep(used(at=START), START + 98)
        self.assertIsNotNone(cache.get("client-1", START + 99))
        self.assertIsNone(cache.get("client-1", START + 100))

    def test_copies_out(self) -> None:
        cache = ClientCache(unused_client_ttl=None)
        cache.keep(used(), START)
        got = cache.get("client-1", START)
        got.extra_metadata["new"] = 1
        self.assertNotIn("new", cache.get("client-1", START).extra_metadata)

    def test_bounded_oldest_read_dropped(self) -> None:
        cache = ClientCache(unused_client_ttl=None, max_entries=2)
        for name in ("a", "b", "c"):
            cache.keep(used(name), START)
        self.assertIsNone(cache.get("a", START))
        self.assertIsNotNone(cache.get("b", START))
        self.assertIsNotNone(cache.get("c", START))

    def test_a_use_recorded_lately_needs_no_write(self) -> None:
        cache = ClientCache(unused_client_ttl=None, max_age=5.0)
        self.assertFalse(cache.use_recorded_lately("client-1", START))  # unknown
        cache.keep(used(at=START - 10), START)
        self.assertFalse(cache.use_recorded_lately("client-1", START))  # read, used long ago
        cache.record_use("client-1", START + 1)
        self.assertTrue(cache.use_recorded_lately("client-1", START + 4))
        self.assertEqual(cache.get("client-1", START + 4).last_used_at, START + 1)
        cache.forget("client-1")
        self.assertFalse(cache.use_recorded_lately("client-1", START + 4))
