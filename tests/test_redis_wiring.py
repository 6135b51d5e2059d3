"""``[storage].type = "redis"`` through ``build_application``, against a real redis-server.

The application runs on the real reactor (Redis is real I/O); requests go to its routes
through StubTreq, whose in-memory exchange is flushed while the reactor turns until the
answer arrives (bounded by a timeout).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.application import Application, build_application
from authproxy.config import config_from_mapping
from authproxy.storage.redis.link import RedisLink
from authproxy.testing.redis import RedisServer, redis_server_or_skip
from authproxy.testing.upstream import BASE_CONFIG, AuthServerHarness, _merge, s256_pair

_TIMEOUT = 10.0


def turn_until(done: Any, timeout: float = _TIMEOUT, flush: Any = None) -> None:
    """Turn the real reactor (and ``flush`` an in-memory exchange) until ``done()``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done within {timeout} s")
        if flush is not None:
            flush()
        reactor.iterate(0.005)  # type: ignore[attr-defined]


def redis_config(server: RedisServer, **storage: Any) -> dict[str, Any]:
    """The harness's configuration with Redis storage on ``server``."""
    return _merge(
        BASE_CONFIG,
        {"storage": {"type": "redis", "url": server.url, "key_prefix": "wired:", **storage}},
    )


class WiredRedisHarness(AuthServerHarness):
    """AuthServerHarness's flows against the routes ``build_application`` wires, with Redis
    storage; the storage's services run while the test does."""

    def __init__(self, case: SynchronousTestCase, data: dict[str, Any]) -> None:
        from authproxy.authserver.login_binding import LoginBinding
        from authproxy.tokens import OpaqueTokens

        self.config = config_from_mapping(data, environ={})
        self.app: Application = build_application(self.config, reactor)
        self.clock = reactor
        self.ring = self.app.ring
        self.storage = self.app.storage
        self.provider = self.app.provider
        self.root = self.app.root
        self.base = self.config.server.public_url
        self.issuer = self.config.auth_server.issuer
        self.opaque = OpaqueTokens(self.ring)
        self.binding = LoginBinding.for_public_url(self.base, self.ring)
        self._treq: Any = StubTreq(self.root)
        for service in self.storage.services:
            service.startService()
        case.addCleanup(self.stop)

    def stop(self) -> None:
        stopping = gatherResults([s.stopService() for s in self.storage.services])
        fired: list[object] = []
        stopping.addBoth(fired.append)
        turn_until(lambda: fired)

    @property
    def link(self) -> RedisLink:
        (link,) = [s for s in self.storage.services if isinstance(s, RedisLink)]
        return link

    def wait_connected(self) -> None:
        turn_until(self.link.is_up)

    def _wait(self, d: Deferred[Any]) -> Any:
        results: list[Any] = []
        d.addBoth(results.append)
        turn_until(lambda: results, flush=self._treq.flush)
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def login(self, client: Any, challenge: str, **params: str) -> dict[str, str]:
        """authorize -> the development login page (its code issued directly) -> callback."""
        authorize = self.get(self.authorize_url(client, challenge, **params))
        assert authorize.code == 302, (authorize.code, authorize.body)
        state = parse_qs(urlsplit(authorize.header("location") or "").query)["state"][0]
        code = self.provider.issue_code("alice", state)
        callback = self.get(self.provider.callback_url(code, state))
        assert callback.code == 302, (callback.code, callback.body)
        return callback.location_params()


class RedisWiringTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server = redis_server_or_skip()
        self.addCleanup(self.server.stop)

    def test_register_authorize_token_refresh_through_redis(self) -> None:
        h = WiredRedisHarness(self, redis_config(self.server))
        h.wait_connected()
        self.assertEqual(h.app.readiness.checks["storage"](), (True, h.link.readiness()[1]))
        client = h.register()
        verifier, challenge = s256_pair()
        callback = h.login(client, challenge)
        tokens = h.redeem(client, callback["code"], verifier).json()
        refreshed = h.refresh(client, tokens["refresh_token"])
        self.assertEqual(refreshed.code, 200, refreshed.body)
        self.assertNotEqual(refreshed.json()["refresh_token"], tokens["refresh_token"])
        # the records are in Redis, under the configured prefix
        keys = h._wait(h.link.commands.keys("wired:*"))
        self.assertTrue(any(k.startswith("wired:clients") for k in keys), keys)

    def test_a_second_application_on_the_same_redis_knows_the_client(self) -> None:
        first = WiredRedisHarness(self, redis_config(self.server))
        first.wait_connected()
        client = first.register()
        second = WiredRedisHarness(self, redis_config(self.server))
        second.wait_connected()
        verifier, challenge = s256_pair()
        callback = second.login(client, challenge)
        self.assertEqual(second.redeem(client, callback["code"], verifier).code, 200)

    def test_starts_without_redis_and_connects_when_it_comes(self) -> None:
        port = self.server.port
        self.server.stop()
        h = WiredRedisHarness(self, redis_config(self.server))
        ready, detail = h.app.readiness.checks["storage"]()
        self.assertFalse(ready)
        self.assertIn(f"127.0.0.1:{port}", detail)
        refused = h.request("POST", "/oauth/register", json_body={"redirect_uris": ["x"]})
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.header("retry-after"), "5")
        self.assertEqual(refused.json()["error"], "temporarily_unavailable")
        self.server = RedisServer.start(port=port)
        h.wait_connected()
        self.assertEqual(h.register()["redirect_uris"], ["http://127.0.0.1:33418/callback"])
