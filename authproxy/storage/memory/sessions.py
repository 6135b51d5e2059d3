"""MemoryUpstreamSessions: upstream token sessions in process memory."""

from __future__ import annotations

from functools import partial

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.memory.expiring import ExpiringMap, detached
from authproxy.storage.memory.ledger import CapLedger, sweep_owned
from authproxy.storage.models import UpstreamTokenSession
from authproxy.storage.sessions import IUpstreamSessions


@implementer(IUpstreamSessions)
class MemoryUpstreamSessions:
    """Sessions until their expiry; at the cap, evicted by upstream user."""

    def __init__(self, ledger: CapLedger, cap: int) -> None:
        self._ledger = ledger
        self._sessions: ExpiringMap[str, UpstreamTokenSession] = ExpiringMap()
        self._owners = OwnerIndex()  # by upstream user
        self._put = partial(ledger.put_owned, "upstream_sessions", self._sessions, self._owners)
        sweep = sweep_owned(self._sessions, self._owners)
        ledger.register("upstream_sessions", cap, self._sessions, sweep)

    def put_upstream_session(self, session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""
        self._put(
            session.tsid,
            f"{session.upstream_name}\0{session.subject}",
            detached(session),
            session.expires_at,
        )  # by user: a login flood costs its own
        return defer.succeed(None)

    def get_upstream_session(self, tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""
        session = self._sessions.get(tsid, self._ledger.now())
        return defer.succeed(None if session is None else detached(session))

    def delete_upstream_session(self, tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""
        self._sessions.pop(tsid)
        self._owners.discard(tsid)
        return defer.succeed(None)

    def lock_refresh(self, tsid: str, ttl: float) -> Deferred[str | None]:
        """Always granted: no other process shares this store (SingleFlight covers this one)."""
        return defer.succeed("in-process")

    def unlock_refresh(self, tsid: str, lock: str) -> Deferred[None]:
        """Nothing to release."""
        return defer.succeed(None)
