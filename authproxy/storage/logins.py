"""ILogins: logins in progress (pending authorizations) between /authorize and the callback."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from authproxy.storage.models import PendingAuthorization


class ILogins(Interface):
    """Pending authorizations, keyed by authproxy's internal state value."""

    def put_pending(pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at; at the cap, the oldest of the
        owner (pending.owner) holding the most goes first, never another owner's before."""

    def get_pending(state: str) -> Deferred[PendingAuthorization | None]:
        """Read without consuming (the consent page)."""

    def update_pending(pending: PendingAuthorization) -> Deferred[None]:
        """Replace an existing pending authorization (same state); never revive a gone one."""

    def take_pending(state: str) -> Deferred[PendingAuthorization | None]:
        """Read and delete: a state can complete the flow once."""
