"""Sentinel discovery against real processes: a redis master, its replica, one sentinel.

The storage is built the daemon's way (``redis_storage_for`` with ``sentinels``) on the real
reactor; ``SENTINEL failover`` (forced, nothing killed) moves the master, and writes go on
through the new one after the link reconnects, with what was replicated before still there.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import StorageConfig
from authproxy.storage.capacity import StorageCaps
from authproxy.storage.composite import Storage
from authproxy.storage.redis.deployment import redis_storage_for
from authproxy.storage.unavailable import StorageUnavailable
from authproxy.testing.redis import RedisServer, redis_server_or_skip
from tests.storage_conformance import make_client
from tests.test_redis_wiring import turn_until
from tests.test_storage_redis import RING

_FAILOVER_TIMEOUT = 30.0


def wait(d: Deferred[Any]) -> Any:
    """The result of ``d`` (a Failure if it failed), turning the reactor until it fires."""
    fired: list[Any] = []
    d.addBoth(fired.append)
    turn_until(lambda: fired)
    return fired[0]


class SentinelFailoverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.master = redis_server_or_skip()
        self.addCleanup(self.master.stop)
        self.replica = RedisServer.start(replica_of=self.master.port)
        self.addCleanup(self.replica.stop)
        self.sentinel = RedisServer.start_sentinel("mymaster", self.master.port)
        self.addCleanup(self.sentinel.stop)

    def storage(self) -> Storage:
        config = StorageConfig(
            type="redis",
            url="redis://mymaster/0",
            sentinels=(f"127.0.0.1:{self.sentinel.port}",),
            sentinel_master="mymaster",
            key_prefix="sentinel:",
        )
        storage = redis_storage_for(config, StorageCaps(), reactor, RING)
        for service in storage.services:
            service.startService()
        self.addCleanup(lambda: wait(gatherResults([s.stopService() for s in storage.services])))
        return storage

    def named_port(self) -> int:
        reply = self.sentinel.command("SENTINEL", "get-master-addr-by-name", "mymaster")
        return int(reply[1])

    def fail_over(self) -> None:
        """Force a failover once the sentinel knows the replica; wait until it names it and
        has demoted the old master."""
        deadline = time.monotonic() + _FAILOVER_TIMEOUT
        while str(self.sentinel.command("SENTINEL", "failover", "mymaster")) != "OK":
            self.assertLess(time.monotonic(), deadline, "the sentinel never found the replica")
            time.sleep(0.1)
        turn_until(lambda: self.named_port() == self.replica.port, _FAILOVER_TIMEOUT)
        # until Sentinel demotes the old master (and kills its clients), it takes writes
        turn_until(lambda: self.role(self.master) == b"slave", _FAILOVER_TIMEOUT)

    @staticmethod
    def role(server: RedisServer) -> bytes | None:
        """The node's role; None while it drops its clients (a demotion kills them)."""
        try:
            return bytes(server.command("ROLE")[0])
        except ConnectionError:
            return None

    def write_until_accepted(self, client_id: str) -> None:
        deadline = time.monotonic() + _FAILOVER_TIMEOUT
        while True:
            result = wait(
                self.storage_.clients.add_client(make_client(client_id, reactor.seconds()))
            )
            if not isinstance(result, Failure):
                return
            result.trap(StorageUnavailable)
            self.assertLess(time.monotonic(), deadline, f"writes still refused: {result.value}")
            reactor.iterate(0.05)  # type: ignore[attr-defined]

    def test_writes_continue_on_the_new_master_after_failover(self) -> None:
        self.storage_ = storage = self.storage()
        link, feed = storage.services
        turn_until(link.is_up)
        turn_until(lambda: feed.subscription.subscriptions >= 1)
        self.assertEqual(link.readiness()[0], True)
        self.assertIsNone(
            wait(storage.clients.add_client(make_client("before", reactor.seconds())))
        )
        # replicated before the failover
        keys = self.master.command("DBSIZE")
        turn_until(lambda: self.replica.command("DBSIZE") == keys)

        self.fail_over()
        self.write_until_accepted("after")

        self.assertEqual(self.replica.command("ROLE")[0], b"master")
        self.assertTrue(self.replica.command("KEYS", "sentinel:*after"))  # written there
        self.assertEqual(wait(storage.clients.get_client("before")).client_id, "before")
        self.assertEqual(wait(storage.clients.get_client("after")).client_id, "after")
        # the revocation feed found the new master too (resubscribed there)
        turn_until(lambda: feed.subscription.subscriptions >= 2, _FAILOVER_TIMEOUT)
        self.assertEqual(self.replica.command("PUBSUB", "NUMSUB", "sentinel:revocations")[1], 1)
