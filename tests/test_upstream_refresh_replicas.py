"""Upstream token refresh across replicas: one refresh, every replica uses its token.

Two TokenSessions ("replicas") over two Redis storages sharing one real redis-server, on the
real reactor (the waiting replica re-reads the session on reactor timers).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import config_from_mapping
from authproxy.storage.redis import redis_storage
from authproxy.upstream.sessions import TokenResponse, TokenSessions
from tests.storage_conformance import make_session
from tests.test_storage_redis import RING, OnRedis

CONFIG = config_from_mapping(
    {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "backend": {"url": "http://127.0.0.1:9"},
        "upstream": {"type": "development"},
    },
    environ={},
)


class CountingIdP:
    """The IdP's token endpoint: counts refresh requests and answers when told to."""

    def __init__(self) -> None:
        self.refreshes: list[str] = []
        self.pending: list[Deferred[TokenResponse]] = []

    def refresh(self, refresh_token: str) -> Deferred[TokenResponse]:
        self.refreshes.append(refresh_token)
        d: Deferred[TokenResponse] = Deferred()
        self.pending.append(d)
        return d

    def answer(self) -> None:
        for d in self.pending:
            d.callback(TokenResponse("refreshed-access", "Bearer", 600, "rotated-refresh"))


class Replica(TokenSessions):
    def __init__(self, storage: Any, idp: CountingIdP) -> None:
        super().__init__(CONFIG, storage.upstream_sessions, reactor)
        self.idp = idp

    def _refresh(self, session: Any) -> Deferred[TokenResponse]:
        return self.idp.refresh(session.refresh_token)


class RefreshAcrossReplicasTests(OnRedis, SynchronousTestCase):
    def test_one_refresh_and_both_replicas_use_its_token(self) -> None:
        now = reactor.seconds()  # type: ignore[attr-defined]
        a_storage = redis_storage(self.redis, reactor, RING, key_prefix="replicas:")
        b_storage = redis_storage(self.redis, reactor, RING, key_prefix="replicas:")
        stale = make_session(access_token_expires_at=now - 1, expires_at=now + 3600)
        self.successResultOf(a_storage.upstream_sessions.put_upstream_session(stale))
        idp = CountingIdP()
        a, b = Replica(a_storage, idp), Replica(b_storage, idp)
        first = a.upstream_access_token("tsid-1")
        wait_until_one_refresh_is_asked = Deferred[None]()
        reactor.callLater(0.2, wait_until_one_refresh_is_asked.callback, None)  # type: ignore[attr-defined]
        second = b.upstream_access_token("tsid-1")
        self.successResultOf(wait_until_one_refresh_is_asked)
        self.assertEqual(idp.refreshes, ["upstream-refresh"])
        idp.answer()
        tokens = self.successResultOf(gatherResults([first, second]))
        self.assertEqual(tokens, ["refreshed-access", "refreshed-access"])
        self.assertEqual(idp.refreshes, ["upstream-refresh"])
        stored = self.successResultOf(b_storage.upstream_sessions.get_upstream_session("tsid-1"))
        self.assertEqual(stored.refresh_token, "rotated-refresh")
