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
