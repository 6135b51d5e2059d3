"""Redis storage: the conformance suite per concern against a real redis-server.

One redis-server for the module, started on first use and stopped at exit; each test
connects, empties the database and disconnects. The conformance mixins are synchronous
(``successResultOf``): here each Deferred is awaited by iterating the real reactor until it
fires, bounded by a timeout, so the same tests run against memory and Redis.
"""

from __future__ import annotations

import atexit
import itertools
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage import Storage
from authproxy.storage.redis import redis_storage
from authproxy.storage.redis.connection import connect_redis
from authproxy.testing.redis import RedisServer, redis_server_or_skip
from tests.storage_conformance import (
    AuthorizationCodesConformance,
    ClientsConformance,
    LoginsConformance,
    RateCountersConformance,
    RevocationsConformance,
    StorageConformance,
    TokenFamiliesConformance,
    UpstreamSessionsConformance,
    UsersConformance,
)

_TIMEOUT = 5.0
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
        return redis_storage(self.redis, clock, key_prefix=f"t{next(_prefixes)}:", **limits)

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
