"""MemoryLogins: pending authorizations in process memory."""

from __future__ import annotations

from functools import partial

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.logins import ILogins
from authproxy.storage.memory.expiring import ExpiringMap, detached
from authproxy.storage.memory.ledger import CapLedger, sweep_owned
from authproxy.storage.models import PendingAuthorization


@implementer(ILogins)
class MemoryLogins:
    """Logins in progress; at the cap, evicted by owner (the source address)."""

    def __init__(self, ledger: CapLedger, cap: int) -> None:
        self._ledger = ledger
        self._pending: ExpiringMap[str, PendingAuthorization] = ExpiringMap()
        self._owners = OwnerIndex()
        self._put = partial(ledger.put_owned, "pending", self._pending, self._owners)
        ledger.register("pending", cap, self._pending, sweep_owned(self._pending, self._owners))

    def put_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at; at the cap, the oldest login in
        progress of the owner holding the most goes (the newcomer's own when it holds as many)."""
        self._put(pending.state, pending.owner, detached(pending), pending.expires_at)
        return defer.succeed(None)

    def get_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read without consuming (the consent page)."""
        pending = self._pending.get(state, self._ledger.now())
        return defer.succeed(None if pending is None else detached(pending))

    def update_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Replace an existing pending authorization (same state).

        When it is gone (taken, expired or evicted) nothing is stored: an update must never
        bring back a state that already completed the flow.
        """
        if self._pending.get(pending.state, self._ledger.now()) is not None:
            self._pending.set(pending.state, detached(pending), pending.expires_at)
        return defer.succeed(None)

    def take_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read and delete: a state can complete the flow once."""
        pending = self._pending.get(state, self._ledger.now())
        self._pending.pop(state)
        self._owners.discard(state)
        return defer.succeed(pending)
