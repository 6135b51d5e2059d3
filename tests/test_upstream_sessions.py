"""Upstream token sessions: fresh tokens, refresh, shared refreshes, ended and transient failures."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import config_from_mapping
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import UpstreamTokenSession
from authproxy.storage.unavailable import StorageUnavailable
from authproxy.upstream.development import DevelopmentProvider
from authproxy.upstream.interface import UpstreamSessionEnded, UpstreamUnavailable
from authproxy.upstream.registry import make_upstream_provider
from authproxy.upstream.sessions import FORCED_REFRESH_COOLDOWN, REFRESH_MARGIN
from tests.test_upstream_oidc import START, Harness, make_config


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = Harness()
        self.h.idp.expires_in = 600
        self.identity = self.successResultOf(self.h.finish())
        self.tsid = self.identity.tsid

    def session(self) -> UpstreamTokenSession | None:
        return self.successResultOf(
            self.h.storage.upstream_sessions.get_upstream_session(self.tsid)
        )

    def token(self) -> Deferred[str]:
        return self.h.provider.upstream_access_token(self.tsid)

    def refreshes(self) -> int:
        return sum(
            1 for r in self.h.idp.token_requests if r["form"]["grant_type"] == "refresh_token"
        )

    def test_fresh_token_without_request(self) -> None:
        session = self.session()
        assert session is not None
        self.h.clock.advance(600 - REFRESH_MARGIN - 1)
        self.assertEqual(self.successResultOf(self.token()), session.access_token)
        self.assertEqual(self.refreshes(), 0)

    def test_refresh_shortly_before_expiry(self) -> None:
        old = self.session()
        assert old is not None
        self.h.clock.advance(600 - REFRESH_MARGIN)
        token = self.successResultOf(self.token())
        self.assertNotEqual(token, old.access_token)
        self.assertEqual(self.refreshes(), 1)
        new = self.session()
        assert new is not None
        self.assertEqual(new.access_token, token)
        # the IdP rotated the refresh token: the new one is kept
        self.assertNotEqual(new.refresh_token, old.refresh_token)
        self.assertIn(new.refresh_token, self.h.idp.refresh_tokens)
        self.assertEqual(new.access_token_expires_at, self.h.clock.seconds() + 600)
        # identity and id_token unchanged
        self.assertEqual(
            (new.subject, new.claims, new.id_token), (old.subject, old.claims, old.id_token)
        )
        # fresh again: no second refresh
        self.successResultOf(self.token())
        self.assertEqual(self.refreshes(), 1)
        refresh_form = self.h.idp.token_requests[-1]
        self.assertEqual(refresh_form["auth_method"], "client_secret_basic")

    def test_rejected_token_is_refreshed_though_fresh(self) -> None:
        # the backend refused it: refresh, even well before expiry, and cache the new one
        old = self.successResultOf(self.token())
        new = self.successResultOf(self.h.provider.refresh_upstream_token(self.tsid, old))
        self.assertNotEqual(new, old)
        self.assertEqual(self.refreshes(), 1)
        self.assertEqual(self.successResultOf(self.token()), new)
        # a second request that saw the old token refused finds it already replaced
        again = self.successResultOf(self.h.provider.refresh_upstream_token(self.tsid, old))
        self.assertEqual(again, new)
        self.assertEqual(self.refreshes(), 1)

    def test_rejected_token_refresh_refused_ends_the_session(self) -> None:
        old = self.successResultOf(self.token())
        self.h.idp.refresh_error = "invalid_grant"
        self.failureResultOf(
            self.h.provider.refresh_upstream_token(self.tsid, old), UpstreamSessionEnded
        )
        self.assertIsNone(self.session())

    def test_forced_refresh_at_most_once_per_window(self) -> None:
        # review 2 F1: a backend that refuses every token made every request refresh at the IdP
        old = self.successResultOf(self.token())
        new = self.successResultOf(self.h.provider.refresh_upstream_token(self.tsid, old))
        self.h.clock.advance(FORCED_REFRESH_COOLDOWN - 1)
        self.failureResultOf(
            self.h.provider.refresh_upstream_token(self.tsid, new), UpstreamSessionEnded
        )
        self.assertEqual(self.refreshes(), 1)
        self.assertIsNone(self.session())  # the fresh token refused too: the session is over

    def test_forced_refresh_again_after_the_window(self) -> None:
        old = self.successResultOf(self.token())
        new = self.successResultOf(self.h.provider.refresh_upstream_token(self.tsid, old))
        self.h.clock.advance(FORCED_REFRESH_COOLDOWN)
        newer = self.successResultOf(self.h.provider.refresh_upstream_token(self.tsid, new))
        self.assertNotIn(newer, (old, new))
        self.assertEqual(self.refreshes(), 2)
        self.assertIsNotNone(self.session())

    def test_refresh_keeps_refresh_token_when_not_rotated(self) -> None:
        old = self.session()
        assert old is not None
        self.h.idp.rotate_refresh_tokens = False
        self.h.clock.advance(600)
        self.successResultOf(self.token())
        new = self.session()
        assert new is not None
        self.assertEqual(new.refresh_token, old.refresh_token)

    def test_refresh_slides_session_expiry(self) -> None:
        self.h.clock.advance(6 * 86400)
        self.successResultOf(self.token())
        session = self.session()
        assert session is not None
        self.assertEqual(session.expires_at, self.h.clock.seconds() + 7 * 86400)

    def test_concurrent_callers_share_one_refresh(self) -> None:
        self.h.clock.advance(600)
        self.h.idp.hang.add("/token")
        before = self.h.idp.count("/token")
        waiting = [self.token() for _ in range(5)]
        for d in waiting:
            self.assertNoResult(d)
        self.assertEqual(self.h.idp.count("/token"), before + 1)
        self.assertEqual(self.h.idp.answer_hung(), 1)
        self.h.stub.flush()
        tokens = {self.successResultOf(d) for d in waiting}
        self.assertEqual(len(tokens), 1)
        self.assertEqual(self.refreshes(), 1)

    def test_one_caller_cancelling_does_not_cancel_others(self) -> None:
        self.h.clock.advance(600)
        self.h.idp.hang.add("/token")
        first, second = self.token(), self.token()
        first.cancel()
        self.failureResultOf(first)
        self.h.idp.answer_hung()
        self.h.stub.flush()
        self.successResultOf(second)

    def test_separate_sessions_refresh_separately(self) -> None:
        other = self.successResultOf(self.h.finish("s2"))
        self.h.clock.advance(600)
        self.successResultOf(self.token())
        self.successResultOf(self.h.provider.upstream_access_token(other.tsid))
        self.assertEqual(self.refreshes(), 2)

    def test_invalid_grant_ends_session(self) -> None:
        self.h.clock.advance(600)
        self.h.idp.hang.add("/token")
        waiting = [self.token() for _ in range(3)]
        self.h.idp.refresh_error = "invalid_grant"
        self.h.idp.answer_hung()
        self.h.stub.flush()
        for d in waiting:
            self.failureResultOf(d, UpstreamSessionEnded)
        self.assertIsNone(self.session())
        self.failureResultOf(self.token(), UpstreamSessionEnded)
        self.assertEqual(self.refreshes(), 1)

    def test_github_bad_refresh_token_ends_session(self) -> None:
        # GitHub answers 200 with an error member
        self.h.idp.refresh_error = "bad_refresh_token"
        self.h.idp.refresh_status = 200
        self.h.clock.advance(600)
        self.failureResultOf(self.token(), UpstreamSessionEnded)
        self.assertIsNone(self.session())

    def test_other_refusal_is_not_the_end(self) -> None:
        self.h.idp.refresh_error = "invalid_client"
        self.h.idp.refresh_status = 401
        self.h.clock.advance(600)
        self.failureResultOf(self.token(), UpstreamUnavailable)
        self.assertIsNotNone(self.session())

    def test_timeout_is_transient(self) -> None:
        self.h.clock.advance(600)
        self.h.idp.hang.add("/token")
        d = self.token()
        self.assertNoResult(d)
        self.h.clock.advance(10)
        failure = self.failureResultOf(d, UpstreamUnavailable)
        self.assertGreater(failure.value.retry_after, 0)
        self.assertIsNotNone(self.session())
        # the IdP is back: the next caller refreshes
        self.h.idp.hang.clear()
        self.successResultOf(self.token())

    def test_server_error_is_transient(self) -> None:
        self.h.idp.refresh_error = "server_error"
        self.h.idp.refresh_status = 502
        self.h.clock.advance(600)
        self.failureResultOf(self.token(), UpstreamUnavailable)
        self.assertIsNotNone(self.session())

    def test_bad_refresh_answer_is_transient(self) -> None:
        self.h.idp.token_type = "mac"
        self.h.clock.advance(600)
        self.failureResultOf(self.token(), UpstreamUnavailable)

    def test_expired_without_refresh_token_ends(self) -> None:
        self.h.idp.issue_refresh_token = False
        identity = self.successResultOf(self.h.finish("s2"))
        self.h.clock.advance(600)
        self.failureResultOf(
            self.h.provider.upstream_access_token(identity.tsid), UpstreamSessionEnded
        )

    def test_unknown_session(self) -> None:
        self.failureResultOf(self.h.provider.upstream_access_token("nope"), UpstreamSessionEnded)

    def test_session_expires_with_refresh_lifespan(self) -> None:
        self.h.clock.advance(7 * 86400)
        self.failureResultOf(self.token(), UpstreamSessionEnded)

    def test_end_session(self) -> None:
        self.successResultOf(self.h.provider.end_session(self.tsid))
        self.failureResultOf(self.token(), UpstreamSessionEnded)


class ConnectionErrorTests(SynchronousTestCase):
    def test_connection_refused_is_transient(self) -> None:
        @attrs.define
        class Refusing:
            def request(self, method: str, url: str, **kwargs: object) -> Deferred[object]:
                return fail(ConnectionRefusedError())

        clock = Clock()
        clock.advance(START)
        storage = memory_storage(clock)
        provider = make_upstream_provider(
            make_config(), storage.upstream_sessions, clock, http=Refusing()
        )
        services = provider.services()  # type: ignore[attr-defined]
        for service in services:
            service.startService()
        ready, detail = provider.readiness()
        self.assertFalse(ready)
        self.assertIn("ConnectionRefusedError", detail)
        session = UpstreamTokenSession(
            tsid="t",
            upstream_name="oidc",
            access_token="a",
            refresh_token="r",
            access_token_expires_at=START - 1,
            expires_at=START + 3600,
            subject="alice",
        )
        self.successResultOf(storage.upstream_sessions.put_upstream_session(session))
        # no metadata yet: refreshing is impossible for now, not the end of the session
        self.failureResultOf(provider.upstream_access_token("t"), UpstreamUnavailable)
        self.assertIsNotNone(
            self.successResultOf(storage.upstream_sessions.get_upstream_session("t"))
        )
        for service in services:
            service.stopService()


class FreshTokenCacheTests(SynchronousTestCase):
    """The proxy asks for the upstream token on every request: storage is read once."""

    def logged_in(self, storage: Any, clock: Clock) -> tuple[DevelopmentProvider, Any]:
        """A development provider over ``storage`` and the identity of a login through it."""
        config = config_from_mapping(
            {
                "server": {"public_url": "http://127.0.0.1:8080"},
                "backend": {"url": "http://127.0.0.1:9"},
                "upstream": {"type": "development"},
            }
        )
        provider = DevelopmentProvider(config, storage.upstream_sessions, clock)
        code = provider.issue_code("alice", "state-1")
        pending: Any = attrs.make_class("Pending", ["state"])("state-1")
        identity = self.successResultOf(
            provider.finish_login({"code": code, "state": "state-1"}, pending)
        )
        return provider, identity

    def test_fresh_token_served_without_storage_read_until_margin(self) -> None:
        clock = Clock()
        storage = memory_storage(clock)
        reads: list[str] = []
        real_get = storage.upstream_sessions.get_upstream_session

        def counting_get(tsid: str) -> Any:
            reads.append(tsid)
            return real_get(tsid)

        storage.upstream_sessions.get_upstream_session = counting_get  # type: ignore[method-assign]
        provider, identity = self.logged_in(storage, clock)
        first = self.successResultOf(provider.upstream_access_token(identity.tsid))
        for _ in range(5):
            self.assertEqual(
                self.successResultOf(provider.upstream_access_token(identity.tsid)), first
            )
        self.assertEqual(len(reads), 1)
        # ending the session is seen at once
        self.successResultOf(provider.end_session(identity.tsid))
        self.failureResultOf(provider.upstream_access_token(identity.tsid), UpstreamSessionEnded)

    def test_fresh_token_served_while_storage_is_down(self) -> None:
        """A refresh needing storage fails StorageUnavailable (the proxy answers 503)."""
        clock = Clock()
        storage = memory_storage(clock)
        down: list[bool] = []
        real_get = storage.upstream_sessions.get_upstream_session

        def get(tsid: str) -> Any:
            return fail(StorageUnavailable("Redis is unreachable")) if down else real_get(tsid)

        storage.upstream_sessions.get_upstream_session = get  # type: ignore[method-assign]
        provider, identity = self.logged_in(storage, clock)
        first = self.successResultOf(provider.upstream_access_token(identity.tsid))
        down.append(True)
        self.assertEqual(self.successResultOf(provider.upstream_access_token(identity.tsid)), first)
        clock.advance(86400)  # past the access token's life: a refresh must read storage
        self.failureResultOf(provider.upstream_access_token(identity.tsid), StorageUnavailable)
