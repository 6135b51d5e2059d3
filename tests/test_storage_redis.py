"""Redis storage: the conformance suite per concern against a real redis-server.

One redis-server for the module, started on first use and stopped at exit; each test
connects, empties the database and disconnects. The conformance mixins are synchronous
(``successResultOf``): here each Deferred is awaited by iterating the real reactor until it
fires, bounded by a timeout, so the same tests run against memory and Redis.
"""

from __future__ import annotations

import atexit
import itertools
import json
import time
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage import Storage
from authproxy.storage.redis import redis_storage
from authproxy.storage.redis.connection import LuaScript
from authproxy.storage.redis.feed import RevocationFeed
from authproxy.testing.redis import RedisServer, connect_redis, redis_server_or_skip
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

_TIMEOUT = 5.0


@attrs.frozen
class Ring:
    """An HMAC secret ring, active secret first."""

    hmac_secrets: tuple[bytes, ...]


RING = Ring((b"s" * 32,))
_server: list[RedisServer] = []
_prefixes = itertools.count()


def _redis_server() -> RedisServer:
    if not _server:
        _server.append(redis_server_or_skip())
        atexit.register(_server[0].stop)
    return _server[0]


def wait_for(d: Deferred[Any], timeout: float = _TIMEOUT) -> None:
    """Iterate the real reactor until ``d`` has fired (AssertionError after ``timeout``)."""
    fired: list[bool] = []

    def passthrough(result: object) -> object:
        fired.append(True)
        return result

    d.addBoth(passthrough)
    deadline = time.monotonic() + timeout
    while not fired:
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer from redis-server within {timeout} s")
        reactor.iterate(0.01)  # type: ignore[attr-defined]


class OnRedis:
    """The Redis implementation of every concern, each storage under a fresh key prefix."""

    def setUp(self) -> None:
        server = _redis_server()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=_TIMEOUT)
        connecting = connect_redis(endpoint, reconnect=False)
        self.redis = self.successResultOf(connecting)
        self.addCleanup(lambda: wait_for(self.redis.disconnect()))  # type: ignore[attr-defined]
        self.successResultOf(self.redis.flushdb())
        super().setUp()  # type: ignore[misc]

    def make_storage(self, clock: Clock, **limits: Any) -> Storage:
        prefix = f"t{next(_prefixes)}:"
        return redis_storage(self.redis, clock, RING, key_prefix=prefix, **limits)

    def successResultOf(self, d: Deferred[Any]) -> Any:
        wait_for(d)
        return super().successResultOf(d)  # type: ignore[misc]

    def failureResultOf(self, d: Deferred[Any], *types: Any) -> Any:
        wait_for(d)
        return super().failureResultOf(d, *types)  # type: ignore[misc]


class RedisClientsTests(OnRedis, ClientsConformance, SynchronousTestCase):
    pass


class RedisLoginsTests(OnRedis, LoginsConformance, SynchronousTestCase):
    pass


class RedisAuthorizationCodesTests(OnRedis, AuthorizationCodesConformance, SynchronousTestCase):
    pass


class RedisTokenFamiliesTests(OnRedis, TokenFamiliesConformance, SynchronousTestCase):
    pass


class RedisUpstreamSessionsTests(OnRedis, UpstreamSessionsConformance, SynchronousTestCase):
    pass


class RedisUsersTests(OnRedis, UsersConformance, SynchronousTestCase):
    pass


class RedisRevocationsTests(OnRedis, RevocationsConformance, SynchronousTestCase):
    pass


class RedisRateCountersTests(OnRedis, RateCountersConformance, SynchronousTestCase):
    pass


class RedisStorageTests(OnRedis, StorageConformance, SynchronousTestCase):
    pass


class LuaScriptTests(OnRedis, SynchronousTestCase):
    """Scripts go as EVALSHA of a hash computed once; Redis forgetting them is harmless."""

    def test_script_runs_again_after_redis_forgot_it(self) -> None:
        script = LuaScript("echo", "return ARGV[1] .. KEYS[1]")
        self.assertEqual(self.successResultOf(script(self.redis, ["k"], ["a"])), "ak")
        self.successResultOf(self.redis.execute_command("SCRIPT", "FLUSH"))
        self.assertEqual(self.successResultOf(script(self.redis, ["k"], [2])), "2k")
        known = self.successResultOf(self.redis.execute_command("SCRIPT", "EXISTS", script.sha))
        self.assertEqual(known, [1])

    def test_script_errors_still_fail(self) -> None:
        script = LuaScript("broken", "return redis.call('NOSUCHCOMMAND')")
        self.failureResultOf(script(self.redis, [], []))


class TwoReplicasTests(OnRedis, SynchronousTestCase):
    """Two storages on two connections to one Redis: what OAuth needs atomic, across replicas."""

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.clock.advance(START)
        server = _redis_server()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", server.port, timeout=_TIMEOUT)
        other = self.successResultOf(connect_redis(endpoint, reconnect=False))
        self.addCleanup(lambda: wait_for(other.disconnect()))
        self.a = redis_storage(self.redis, self.clock, RING, key_prefix="shared:")
        self.b = redis_storage(other, self.clock, RING, key_prefix="shared:")

    def both(self, first: Deferred[Any], second: Deferred[Any]) -> list[Any]:
        """Both results, the two requests sent before either answer arrives."""
        return self.successResultOf(gatherResults([first, second]))

    def test_simultaneous_code_redemptions_one_wins(self) -> None:
        self.successResultOf(self.a.codes.put_code(make_code()))
        first, second = self.both(
            self.a.codes.redeem_code("code-1"), self.b.codes.redeem_code("code-1")
        )
        self.assertEqual(sorted([first.redeemed, second.redeemed]), [False, True])

    def test_simultaneous_rotations_one_wins(self) -> None:
        self.successResultOf(self.a.families.put_family(make_family()))
        self.successResultOf(self.a.families.put_refresh_token(make_refresh_token()))
        results = self.both(
            self.a.families.mark_rotated("rt-1", START, {"access_token": "a"}),
            self.b.families.mark_rotated("rt-1", START, {"access_token": "b"}),
        )
        self.assertEqual(sorted(results), [False, True])
        winner = "a" if results[0] else "b"
        token = self.successResultOf(self.b.families.get_refresh_token("rt-1"))
        self.assertEqual(token.successor_response, {"access_token": winner})

    def test_simultaneous_takes_of_a_login_one_wins(self) -> None:
        self.successResultOf(self.a.logins.put_pending(make_pending()))
        results = self.both(
            self.a.logins.take_pending("state-1"), self.b.logins.take_pending("state-1")
        )
        self.assertEqual(sum(r is not None for r in results), 1)

    def test_rate_limits_are_shared(self) -> None:
        take_a, take_b = self.a.rate_counters.take, self.b.rate_counters.take
        self.assertEqual(self.successResultOf(take_a("ip", 2.0, 0.5)), 0)
        self.assertEqual(self.successResultOf(take_b("ip", 2.0, 0.5)), 0)
        self.assertGreater(self.successResultOf(take_a("ip", 2.0, 0.5)), 0)

    def test_revocation_on_one_replica_moves_the_others_generation_on_poll(self) -> None:
        poll = self.b.revocations.poll_generation
        seen = self.successResultOf(poll())
        self.assertEqual(self.successResultOf(poll()), seen)  # nothing happened
        self.successResultOf(self.a.revocations.revoke_jti("j1", START + 300))
        after_jti = self.successResultOf(poll())
        self.assertNotEqual(after_jti, seen)
        self.assertTrue(self.successResultOf(self.b.revocations.is_jti_revoked("j1")))
        self.successResultOf(self.a.families.put_family(make_family()))
        self.successResultOf(self.a.families.revoke_family("family-1"))
        self.assertNotEqual(self.successResultOf(poll()), after_jti)

    def test_a_registered_client_is_known_to_the_other_replica(self) -> None:
        self.successResultOf(self.a.clients.add_client(make_client()))
        self.assertEqual(self.successResultOf(self.b.clients.get_client("client-1")), make_client())

    def test_a_used_client_is_known_to_the_other_replica_5_s_at_most_after_removal(
        self,
    ) -> None:
        """The client cache's staleness bound (authproxy/storage/redis/client_cache.py)."""
        self.successResultOf(self.a.clients.add_client(make_client()))
        self.successResultOf(self.a.clients.touch_client("client-1"))
        self.assertIsNotNone(self.successResultOf(self.b.clients.get_client("client-1")))
        self.successResultOf(self.redis.execute_command("DEL", "shared:clients:r:client-1"))
        self.clock.advance(4.9)
        self.assertIsNotNone(self.successResultOf(self.b.clients.get_client("client-1")))
        self.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(self.b.clients.get_client("client-1")))

    def test_a_never_used_client_is_always_read(self) -> None:
        self.successResultOf(self.a.clients.add_client(make_client()))
        self.assertIsNotNone(self.successResultOf(self.b.clients.get_client("client-1")))
        self.successResultOf(self.redis.execute_command("DEL", "shared:clients:r:client-1"))
        self.assertIsNone(self.successResultOf(self.b.clients.get_client("client-1")))

    def test_a_use_is_written_once_per_5_s_per_replica(self) -> None:
        self.successResultOf(self.a.clients.add_client(make_client()))
        self.successResultOf(self.a.clients.touch_client("client-1"))
        self.assertIsNotNone(self.successResultOf(self.a.clients.get_client("client-1")))

        def last_used() -> float:
            key = "shared:clients:r:client-1"
            return float(self.successResultOf(self.redis.hget(key, "last_used_at")))

        self.clock.advance(4)
        self.successResultOf(self.a.clients.touch_client("client-1"))
        self.assertEqual(last_used(), START)  # recorded 4 s ago: not written again
        self.successResultOf(self.b.clients.touch_client("client-1"))
        self.assertEqual(last_used(), START + 4)  # the other replica had not recorded one
        self.clock.advance(1)
        self.successResultOf(self.a.clients.touch_client("client-1"))
        self.assertEqual(last_used(), START + 5)

    def test_every_record_has_a_redis_ttl(self) -> None:
        self.successResultOf(self.a.logins.put_pending(make_pending(lifespan=600)))
        self.successResultOf(self.a.codes.put_code(make_code(lifespan=60)))
        self.successResultOf(self.a.revocations.revoke_jti("j1", START + 300))
        for key, most in [
            ("shared:pending:r:state-1", 600_000),
            ("shared:codes:r:code-1", 60_000),
            ("shared:revoked:jti:j1", 360_000),
        ]:
            ttl = self.successResultOf(self.redis.execute_command("PTTL", key))
            self.assertTrue(0 < int(ttl) <= most, (key, ttl))

    def test_key_prefixes_keep_deployments_apart(self) -> None:
        other = redis_storage(self.redis, self.clock, RING, key_prefix="other:")
        self.successResultOf(self.a.clients.add_client(make_client()))
        self.assertIsNone(self.successResultOf(other.clients.get_client("client-1")))

    def test_clients_kept_forever_have_no_redis_ttl(self) -> None:
        forever = redis_storage(
            self.redis, self.clock, RING, key_prefix="k:", unused_client_ttl=None
        )
        self.successResultOf(forever.clients.add_client(make_client()))
        self.clock.advance(10 * 365 * 86400)
        self.assertIsNotNone(self.successResultOf(forever.clients.get_client("client-1")))
        ttl = self.successResultOf(self.redis.execute_command("PTTL", "k:clients:r:client-1"))
        self.assertEqual(int(ttl), -1)

    def test_storing_a_family_again_keeps_its_refresh_tokens(self) -> None:
        self.successResultOf(self.a.families.put_family(make_family()))
        self.successResultOf(self.a.families.put_refresh_token(make_refresh_token()))
        self.successResultOf(self.b.families.put_family(make_family()))
        self.assertIsNotNone(self.successResultOf(self.b.families.get_refresh_token("rt-1")))


class RefreshLockTests(OnRedis, SynchronousTestCase):
    """The upstream refresh lock across two replicas: one holder, compare-and-delete, TTL."""

    def setUp(self) -> None:
        super().setUp()
        clock = Clock()
        clock.advance(START)
        self.a = redis_storage(self.redis, clock, RING, key_prefix="lock:").upstream_sessions
        self.b = redis_storage(self.redis, clock, RING, key_prefix="lock:").upstream_sessions

    def test_one_holder_until_released(self) -> None:
        held = self.successResultOf(self.a.lock_refresh("tsid-1", 15.0))
        self.assertIsNone(self.successResultOf(self.b.lock_refresh("tsid-1", 15.0)))
        self.assertIsNotNone(self.successResultOf(self.b.lock_refresh("tsid-2", 15.0)))
        self.successResultOf(self.b.unlock_refresh("tsid-1", "not-the-holder"))
        self.assertIsNone(self.successResultOf(self.b.lock_refresh("tsid-1", 15.0)))
        self.successResultOf(self.a.unlock_refresh("tsid-1", held))
        self.assertIsNotNone(self.successResultOf(self.b.lock_refresh("tsid-1", 15.0)))

    def test_a_dead_holder_is_freed_by_the_ttl(self) -> None:
        self.successResultOf(self.a.lock_refresh("tsid-1", 15.0))
        key = "lock:upstream_refresh_lock:tsid-1"
        ttl = int(self.successResultOf(self.redis.execute_command("PTTL", key)))
        self.assertTrue(0 < ttl <= 15_000, ttl)
        self.successResultOf(self.redis.delete(key))  # what the TTL does 15 s later
        self.assertIsNotNone(self.successResultOf(self.b.lock_refresh("tsid-1", 15.0)))


class UpstreamTokensAtRestTests(OnRedis, SynchronousTestCase):
    """Upstream tokens reach Redis only sealed, under keys derived from the HMAC ring."""

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.clock.advance(START)

    def sessions(self, *secrets: bytes) -> Any:
        storage = redis_storage(self.redis, self.clock, Ring(secrets), key_prefix="seal:")
        return storage.upstream_sessions

    def test_a_dump_holds_no_upstream_token_nor_subject(self) -> None:
        session = make_session(id_token="upstream-id-token")
        self.successResultOf(self.sessions(b"a" * 32).put_upstream_session(session))
        dump = ""
        for key in ["seal:upstream_sessions:r:tsid-1", "seal:upstream_sessions:i:owner_of"]:
            values = self.successResultOf(self.redis.hgetall(key))
            dump += json.dumps(values)
        self.assertIn("A256GCM", dump)
        for secret in ("upstream-access", "upstream-refresh", "upstream-id-token", "alice"):
            self.assertNotIn(secret, dump)

    def test_hmac_rotation_keeps_sessions_open_until_the_old_secret_leaves(self) -> None:
        old, new = b"o" * 32, b"n" * 32
        self.successResultOf(self.sessions(old).put_upstream_session(make_session()))
        rotated = self.sessions(new, old)
        self.assertEqual(
            self.successResultOf(rotated.get_upstream_session("tsid-1")), make_session()
        )
        self.successResultOf(rotated.put_upstream_session(make_session("tsid-2")))
        retired = self.sessions(new)
        self.assertIsNone(self.successResultOf(retired.get_upstream_session("tsid-1")))
        self.assertEqual(
            self.successResultOf(retired.get_upstream_session("tsid-2")), make_session("tsid-2")
        )

    def test_a_sealed_session_moved_to_another_tsid_does_not_open(self) -> None:
        sessions = self.sessions(b"a" * 32)
        self.successResultOf(sessions.put_upstream_session(make_session("mallory")))
        self.successResultOf(sessions.put_upstream_session(make_session("victim")))
        sealed = self.successResultOf(self.redis.hget("seal:upstream_sessions:r:mallory", "record"))
        self.successResultOf(self.redis.hset("seal:upstream_sessions:r:victim", "record", sealed))
        self.assertIsNone(self.successResultOf(sessions.get_upstream_session("victim")))


def wait_until(condition: Any, timeout: float = _TIMEOUT) -> None:
    """Iterate the real reactor until ``condition()`` holds (AssertionError after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        reactor.iterate(0.01)  # type: ignore[attr-defined]


class RevocationFeedTests(OnRedis, SynchronousTestCase):
    """A revocation on replica A moves replica B's generation within a second, by pub/sub."""

    def setUp(self) -> None:
        super().setUp()
        self.clock = Clock()
        self.clock.advance(START)
        self.a = redis_storage(self.redis, self.clock, RING, key_prefix="feed:")
        self.b = redis_storage(self.redis, self.clock, RING, key_prefix="feed:")
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", _redis_server().port)
        self.feed = RevocationFeed(endpoint, self.b.revocations, self.clock, poll_interval=3600)
        self.feed.startService()
        self.addCleanup(lambda: wait_for(self.feed.stopService()))
        wait_until(lambda: self.feed.subscription.subscriptions == 1)

    def test_subscribing_bumps_the_generation(self) -> None:
        self.assertNotEqual(self.b.revocations.generation, 0)

    def test_revoked_jti_and_family_reach_the_other_replica(self) -> None:
        before = self.b.revocations.generation
        started = time.monotonic()
        self.successResultOf(self.a.revocations.revoke_jti("j1", START + 300))
        wait_until(lambda: self.b.revocations.generation != before, timeout=1.0)
        self.assertLess(time.monotonic() - started, 1.0)
        before = self.b.revocations.generation
        self.successResultOf(self.a.families.put_family(make_family()))
        self.successResultOf(self.a.families.revoke_family("family-1"))
        wait_until(lambda: self.b.revocations.generation != before, timeout=1.0)

    def test_a_lost_subscription_comes_back_and_bumps(self) -> None:
        self.successResultOf(self.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))
        before = self.b.revocations.generation
        wait_until(lambda: self.feed.subscription.subscriptions == 2)
        self.assertNotEqual(self.b.revocations.generation, before)
