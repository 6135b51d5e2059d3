"""Memory storage: the conformance suite per concern, plus caps, sweeping internals and the sweeper."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage import Storage, StorageFull
from authproxy.storage.memory import memory_storage
from authproxy.storage.memory.expiring import ExpiringMap
from authproxy.storage.sweeper import StorageSweeper
from tests.storage_conformance import (
    START,
    AuthorizationCodesConformance,
    ClientsConformance,
    LoginsConformance,
    RateCountersConformance,
    RevocationsConformance,
    StorageConformance,
    TokenFamiliesConformance,
    UpstreamSessionsConformance,
    UsersConformance,
    make_client,
    make_code,
    make_family,
    make_pending,
    make_refresh_token,
    make_session,
)


class InMemory:
    """The memory implementation of every concern."""

    def make_storage(self, clock: Clock, **limits: Any) -> Storage:
        return memory_storage(clock, **limits)


class MemoryClientsTests(InMemory, ClientsConformance, SynchronousTestCase):
    pass


class MemoryLoginsTests(InMemory, LoginsConformance, SynchronousTestCase):
    pass


class MemoryAuthorizationCodesTests(InMemory, AuthorizationCodesConformance, SynchronousTestCase):
    pass


class MemoryTokenFamiliesTests(InMemory, TokenFamiliesConformance, SynchronousTestCase):
    pass


class MemoryUpstreamSessionsTests(InMemory, UpstreamSessionsConformance, SynchronousTestCase):
    pass


class MemoryUsersTests(InMemory, UsersConformance, SynchronousTestCase):
    pass


class MemoryRevocationsTests(InMemory, RevocationsConformance, SynchronousTestCase):
    pass


class MemoryRateCountersTests(InMemory, RateCountersConformance, SynchronousTestCase):
    pass


class MemoryStorageTests(InMemory, StorageConformance, SynchronousTestCase):
    pass


def collect_log_events(test: SynchronousTestCase) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    test.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


class MemoryStorageSpecificTests(SynchronousTestCase):
    """Caps, sizes and sweeping of the memory backend."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)

    def test_bad_cap(self) -> None:
        self.assertRaises(ValueError, memory_storage, self.clock, max_codes=0)

    def test_sweep_counts_and_shrinks(self) -> None:
        storage = memory_storage(self.clock, unused_client_ttl=1000.0)
        self.successResultOf(storage.clients.add_client(make_client()))
        self.successResultOf(storage.logins.put_pending(make_pending(lifespan=600)))
        self.successResultOf(storage.codes.put_code(make_code(lifespan=60)))
        self.successResultOf(storage.families.put_family(make_family(lifespan=86400)))
        self.successResultOf(storage.families.put_refresh_token(make_refresh_token(lifespan=86400)))
        self.successResultOf(
            storage.upstream_sessions.put_upstream_session(make_session(lifespan=86400))
        )
        self.successResultOf(storage.revocations.revoke_jti("j1", START + 300))
        self.successResultOf(storage.users.user_id_for("idp", "alice"))
        self.assertEqual(self.successResultOf(storage.upkeep.sweep()), 0)
        self.clock.advance(60)
        self.assertEqual(self.successResultOf(storage.upkeep.sweep()), 1)  # the code
        self.assertEqual(storage.upkeep.record_counts()["codes"], 0)
        self.assertEqual(storage.upkeep.record_counts()["pending"], 1)
        self.clock.advance(86400)
        self.assertEqual(self.successResultOf(storage.upkeep.sweep()), 6)
        self.assertEqual(
            storage.upkeep.record_counts(),
            {
                "clients": 0,
                "pending": 0,
                "codes": 0,
                "refresh_tokens": 0,
                "families": 0,
                "upstream_sessions": 0,
                "users": 1,
                "revoked_jtis": 0,
            },
        )

    def test_expired_invisible_before_sweep(self) -> None:
        storage = memory_storage(self.clock)
        self.successResultOf(storage.codes.put_code(make_code(lifespan=60)))
        self.clock.advance(60)
        self.assertIsNone(self.successResultOf(storage.codes.redeem_code("code-1")))
        self.assertEqual(storage.upkeep.record_counts()["codes"], 1)

    def test_clients_never_expire_without_ttl(self) -> None:
        storage = memory_storage(self.clock, unused_client_ttl=None)
        self.successResultOf(storage.clients.add_client(make_client()))
        self.clock.advance(10 * 365 * 86400)
        self.successResultOf(storage.upkeep.sweep())
        self.assertIsNotNone(self.successResultOf(storage.clients.get_client("client-1")))

    def test_client_cap_evicts_in_registration_order(self) -> None:
        storage = memory_storage(self.clock, max_clients=2)
        self.successResultOf(storage.clients.add_client(make_client("a")))
        self.successResultOf(storage.clients.add_client(make_client("b")))
        self.successResultOf(storage.clients.add_client(make_client("c")))
        self.successResultOf(storage.clients.add_client(make_client("d")))
        self.assertIsNone(self.successResultOf(storage.clients.get_client("a")))
        self.assertIsNone(self.successResultOf(storage.clients.get_client("b")))
        self.assertEqual(storage.upkeep.record_counts()["clients"], 2)

    def test_client_replacement_does_not_evict(self) -> None:
        storage = memory_storage(self.clock, max_clients=2)
        self.successResultOf(storage.clients.add_client(make_client("a")))
        self.successResultOf(storage.clients.add_client(make_client("b")))
        self.successResultOf(storage.clients.add_client(make_client("b", client_name="renamed")))
        self.assertIsNotNone(self.successResultOf(storage.clients.get_client("a")))
        got = self.successResultOf(storage.clients.get_client("b"))
        assert got is not None
        self.assertEqual(got.client_name, "renamed")

    def test_client_flood_stays_bounded(self) -> None:
        storage = memory_storage(self.clock, max_clients=10)
        for i in range(5):
            self.successResultOf(storage.clients.add_client(make_client(f"used-{i}")))
            self.successResultOf(storage.clients.touch_client(f"used-{i}"))
        for i in range(1000):
            self.successResultOf(storage.clients.add_client(make_client(f"flood-{i}")))
        self.assertEqual(storage.upkeep.record_counts()["clients"], 10)
        for i in range(5):
            self.assertIsNotNone(self.successResultOf(storage.clients.get_client(f"used-{i}")))
        # the most recent flood entries are the ones kept
        self.assertIsNotNone(self.successResultOf(storage.clients.get_client("flood-999")))

    def test_storage_full_is_a_failed_deferred(self) -> None:
        storage = memory_storage(self.clock, max_clients=1)
        self.successResultOf(storage.clients.add_client(make_client("a", last_used_at=START)))
        failure = self.failureResultOf(storage.clients.add_client(make_client("b")), StorageFull)
        self.assertIn("1", str(failure.value))

    def test_caps_bound_every_expiring_collection(self) -> None:
        storage = memory_storage(
            self.clock,
            max_pending=5,
            max_codes=5,
            max_refresh_tokens=5,
            max_families=5,
            max_upstream_sessions=5,
            max_revoked_jtis=5,
            max_users=5,
        )
        for i in range(50):
            self.successResultOf(
                storage.logins.put_pending(make_pending(f"s{i}", lifespan=600 + i))
            )
            self.successResultOf(storage.codes.put_code(make_code(f"c{i}", lifespan=60 + i)))
            if i:  # a rotation chain: only rotated refresh tokens may be evicted
                self.successResultOf(storage.families.mark_rotated(f"r{i - 1}", START, {}))
            self.successResultOf(
                storage.families.put_refresh_token(make_refresh_token(f"r{i}", lifespan=600 + i))
            )
            self.successResultOf(
                storage.families.put_family(make_family(f"f{i}", lifespan=600 + i))
            )
            self.successResultOf(
                storage.upstream_sessions.put_upstream_session(
                    make_session(f"t{i}", lifespan=600 + i)
                )
            )
            self.successResultOf(storage.revocations.revoke_jti(f"j{i}", START + 300 + i))
            self.successResultOf(storage.users.user_id_for("idp", f"user-{i}"))
        sizes = storage.upkeep.record_counts()
        del sizes["clients"]
        # the deny list never forgets a live revocation: it refuses issuance instead
        self.assertEqual(sizes.pop("revoked_jtis"), 50)
        self.assertTrue(self.successResultOf(storage.revocations.is_jti_revoked("j0")))
        self.failureResultOf(storage.families.issuance_room("client-1", False), StorageFull)
        self.assertEqual(set(sizes.values()), {5})
        # the one owner's newest entries survive
        self.assertIsNotNone(self.successResultOf(storage.logins.get_pending("s49")))
        self.assertIsNone(self.successResultOf(storage.logins.get_pending("s44")))
        self.assertIsNotNone(self.successResultOf(storage.families.get_refresh_token("r49")))

    def test_cap_evicts_expired_before_live(self) -> None:
        storage = memory_storage(self.clock, max_codes=2)
        events = collect_log_events(self)
        self.successResultOf(storage.codes.put_code(make_code("old", lifespan=10)))
        self.successResultOf(storage.codes.put_code(make_code("live", lifespan=600)))
        self.clock.advance(10)
        self.successResultOf(storage.codes.put_code(make_code("new", lifespan=600)))
        self.assertIsNotNone(self.successResultOf(storage.codes.redeem_code("live")))
        self.assertIsNotNone(self.successResultOf(storage.codes.redeem_code("new")))
        self.assertEqual(storage.upkeep.record_counts()["codes"], 2)
        # reclaiming an expired entry is no eviction worth a warning
        self.assertEqual([e for e in events if e.get("log_level") == LogLevel.warn], [])

    def test_live_eviction_warns_once_per_period(self) -> None:
        storage = memory_storage(self.clock, max_pending=2)
        events = collect_log_events(self)
        for i in range(10):
            self.successResultOf(storage.logins.put_pending(make_pending(f"secret-state-{i}")))
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(warnings[0]["collection"], "pending")
        self.successResultOf(storage.upkeep.sweep())
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertEqual(warnings[1]["count"], 8)
        # no stored key ever reaches the log
        for event in events:
            self.assertNotIn("secret-state", repr(event))

    def test_refusal_warns_once_per_period_and_counts(self) -> None:
        storage = memory_storage(self.clock, max_revoked_jtis=2)
        events = collect_log_events(self)
        for i in range(3):
            self.successResultOf(storage.revocations.revoke_jti(f"j{i}", START + 300))
        for _ in range(4):
            self.failureResultOf(storage.families.issuance_room("client-1", False), StorageFull)
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual([w["collection"] for w in warnings], ["revoked_jtis"])
        self.assertEqual(storage.upkeep.refusals(), {"revoked_jtis": 4})
        self.successResultOf(storage.upkeep.sweep())
        warnings = [e for e in events if e.get("log_level") == LogLevel.warn]
        self.assertEqual(warnings[-1]["count"], 4)
        self.assertEqual(storage.upkeep.refusals(), {"revoked_jtis": 4})  # a counter: never reset
        for event in events:
            self.assertFalse(any(f"j{i}" in repr(event) for i in range(3)))

    def test_user_cap_forgets_least_recently_seen(self) -> None:
        storage = memory_storage(self.clock, max_users=2)
        alice = self.successResultOf(storage.users.user_id_for("idp", "alice"))
        self.successResultOf(storage.users.user_id_for("idp", "bob"))
        self.assertEqual(self.successResultOf(storage.users.user_id_for("idp", "alice")), alice)
        self.successResultOf(storage.users.user_id_for("idp", "carol"))  # bob goes
        self.assertEqual(self.successResultOf(storage.users.user_id_for("idp", "alice")), alice)
        self.assertEqual(storage.upkeep.record_counts()["users"], 2)

    def test_revoke_jti_generation_only_on_change(self) -> None:
        storage = memory_storage(self.clock)
        self.successResultOf(storage.revocations.revoke_jti("j1", START + 300))
        generation = storage.revocations.generation
        self.successResultOf(storage.revocations.revoke_jti("j1", START + 300))  # already there
        self.successResultOf(storage.revocations.revoke_jti("old", START - 3600))  # long expired
        self.assertEqual(storage.revocations.generation, generation)
        self.assertFalse(self.successResultOf(storage.revocations.is_jti_revoked("old")))
        self.successResultOf(storage.revocations.revoke_jti("j1", START + 900))  # extended
        self.assertEqual(storage.revocations.generation, generation + 1)

    def test_family_prunes_expired_access_tokens(self) -> None:
        # Pruning is amortized (whenever the table doubled), so a long chain of refreshes
        # costs O(1) per token and the table stays proportional to the live tokens.
        storage = memory_storage(self.clock, revoked_jti_leeway=60.0)
        self.successResultOf(storage.families.put_family(make_family()))
        for i in range(20):
            self.successResultOf(
                storage.families.add_family_access_token("family-1", f"old{i}", START + 300)
            )
        self.clock.advance(360)
        live = [(f"new{i}", START + 900.0) for i in range(40)]
        for jti, exp in live:
            self.successResultOf(storage.families.add_family_access_token("family-1", jti, exp))
        family = self.successResultOf(storage.families.get_family("family-1"))
        assert family is not None
        self.assertEqual(sorted(family.access_token_jtis), sorted(live))

    def test_heap_stays_bounded_under_churn(self) -> None:
        store: ExpiringMap[str, int] = ExpiringMap()
        for i in range(10000):
            store.set("k", i, START + i)
            store.set(f"x{i}", i, START + i)
            store.pop(f"x{i}")
        self.assertEqual(len(store), 1)
        self.assertLess(len(store._heap), 200)
        self.assertEqual(store.get("k", START), 9999)

    def test_redeemed_code_keeps_expiry(self) -> None:
        storage = memory_storage(self.clock)
        self.successResultOf(storage.codes.put_code(make_code(lifespan=60)))
        self.successResultOf(storage.codes.redeem_code("code-1"))
        self.successResultOf(storage.codes.set_code_family("code-1", "f"))
        self.clock.advance(60)
        self.assertEqual(self.successResultOf(storage.upkeep.sweep()), 1)


class StorageSweeperTests(SynchronousTestCase):
    """The sweeper service sweeps on the injected clock and survives failures."""

    def test_sweeps_every_interval(self) -> None:
        clock = Clock()
        clock.advance(START)
        storage = memory_storage(clock)
        self.successResultOf(storage.codes.put_code(make_code(lifespan=30)))
        sweeper = StorageSweeper(storage.upkeep, clock, interval=60.0)
        sweeper.startService()
        # swept at start: not yet expired
        self.assertEqual(storage.upkeep.record_counts()["codes"], 1)
        clock.advance(60)
        self.assertEqual(storage.upkeep.record_counts()["codes"], 0)
        self.successResultOf(sweeper.stopService())
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_failure_is_logged_and_loop_goes_on(self) -> None:
        clock = Clock()
        events = collect_log_events(self)

        class Flaky:
            calls = 0

            def sweep(self) -> defer.Deferred[int]:
                self.calls += 1
                if self.calls == 1:
                    raise RuntimeError("boom")
                if self.calls == 2:
                    return defer.fail(RuntimeError("bang"))
                return defer.succeed(3)

        flaky = Flaky()
        sweeper = StorageSweeper(flaky, clock, interval=60.0)
        sweeper.startService()
        clock.advance(60)
        clock.advance(60)
        self.assertEqual(flaky.calls, 3)
        self.assertTrue(sweeper.running)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 2)
        self.successResultOf(sweeper.stopService())
