"""RedisUpstreamSessions: upstream token sessions in Redis.

Not yet encrypted at rest: until the upstream tokens are sealed with AES-GCM (issue 17),
the Redis storage type is not offered in the configuration.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.models import UpstreamTokenSession
from authproxy.storage.redis.connection import dumps, loads
from authproxy.storage.redis.owned import OwnedCollection
from authproxy.storage.sessions import IUpstreamSessions


@implementer(IUpstreamSessions)
class RedisUpstreamSessions:
    """Sessions until their expiry; at the cap, evicted by upstream user."""

    def __init__(self, sessions: OwnedCollection) -> None:
        self._sessions = sessions

    def put_upstream_session(self, session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""
        owner = f"{session.upstream_name}\0{session.subject}"
        return self._sessions.put(session.tsid, owner, dumps(session), session.expires_at)

    def get_upstream_session(self, tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""
        d = self._sessions.get_fields(tsid)
        return d.addCallback(
            lambda v: None if v is None else loads(str(v[0]), UpstreamTokenSession)
        )

    def delete_upstream_session(self, tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""
        return self._sessions.delete(tsid)
