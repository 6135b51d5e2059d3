"""RedisUpstreamSessions: upstream token sessions in Redis, sealed at rest.

Each session (the IdP's access, refresh and ID tokens, the subject and claims) is stored
only encrypted (:class:`~authproxy.storage.redis.sealing.AtRestSealer`); the owner used for
fair shares at the cap is a hash of the upstream identity, not the identity itself.
"""

from __future__ import annotations

import hashlib

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.models import UpstreamTokenSession
from authproxy.storage.redis.connection import dumps, loads
from authproxy.storage.redis.owned import OwnedCollection
from authproxy.storage.redis.sealing import AtRestSealer
from authproxy.storage.sessions import IUpstreamSessions


@implementer(IUpstreamSessions)
class RedisUpstreamSessions:
    """Sessions until their expiry; at the cap, evicted by upstream user."""

    def __init__(self, sessions: OwnedCollection, sealer: AtRestSealer) -> None:
        self._sessions = sessions
        self._sealer = sealer

    def put_upstream_session(self, session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""
        identity = f"{session.upstream_name}\0{session.subject}".encode()
        owner = hashlib.sha256(identity).hexdigest()[:32]  # by user: a flood costs its own
        sealed = self._sealer.seal(dumps(session), session.tsid)
        return self._sessions.put(session.tsid, owner, sealed, session.expires_at)

    def get_upstream_session(self, tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""

        def opened(values: list[object] | None) -> UpstreamTokenSession | None:
            if values is None:
                return None
            plaintext = self._sealer.open(str(values[0]), tsid)
            return None if plaintext is None else loads(plaintext, UpstreamTokenSession)

        return self._sessions.get_fields(tsid).addCallback(opened)

    def delete_upstream_session(self, tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""
        return self._sessions.delete(tsid)
