"""RedisLogins: pending authorizations in Redis."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.logins import ILogins
from authproxy.storage.models import PendingAuthorization
from authproxy.storage.redis.connection import dumps, loads
from authproxy.storage.redis.owned import OwnedCollection


def _pending(values: list[object] | None) -> PendingAuthorization | None:
    return None if values is None else loads(str(values[0]), PendingAuthorization)


@implementer(ILogins)
class RedisLogins:
    """Logins in progress; at the cap, evicted by owner (the source address)."""

    def __init__(self, pending: OwnedCollection) -> None:
        self._pending = pending

    def put_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at, fair between owners at the cap."""
        return self._pending.put(pending.state, pending.owner, dumps(pending), pending.expires_at)

    def get_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read without consuming (the consent page)."""
        return self._pending.get_fields(state).addCallback(_pending)

    def update_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Replace an existing pending authorization; a gone one stays gone."""
        d = self._pending.update(pending.state, dumps(pending), pending.expires_at)
        return d.addCallback(lambda _: None)

    def take_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read and delete in one Lua step: of two replicas, one completes the flow."""
        d = self._pending.take(state)
        return d.addCallback(
            lambda text: None if text is None else loads(text, PendingAuthorization)
        )
