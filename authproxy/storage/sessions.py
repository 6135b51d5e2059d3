"""IUpstreamSessions: the upstream IdP's tokens for each login (token exchange sessions)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from authproxy.storage.models import UpstreamTokenSession


class IUpstreamSessions(Interface):
    """Upstream token sessions by tsid, until their expiry."""

    def put_upstream_session(session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""

    def get_upstream_session(tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""

    def delete_upstream_session(tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""

    def lock_refresh(tsid: str, ttl: float) -> Deferred[str | None]:
        """Take the right to refresh ``tsid``'s upstream tokens for ``ttl`` seconds: a lock
        token to release it with, or None while another replica holds it. A holder that
        dies frees it when ``ttl`` runs out. In one process ``SingleFlight`` already shares
        a refresh, so a store no other process shares grants it always."""

    def unlock_refresh(tsid: str, lock: str) -> Deferred[None]:
        """Release the refresh lock ``lock`` of ``tsid`` (nothing when it is not held by
        ``lock`` any more: it expired and someone else may hold it)."""
