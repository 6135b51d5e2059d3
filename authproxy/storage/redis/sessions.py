"""RedisUpstreamSessions: upstream token sessions in Redis, sealed at rest.

Each session (the IdP's access, refresh and ID tokens, the subject and claims) is stored
only encrypted (:class:`~authproxy.storage.redis.sealing.AtRestSealer`); the owner used for
fair shares at the cap is a hash of the upstream identity, not the identity itself.

The refresh lock (one replica refreshes a session's upstream tokens at a time) is
``SET <prefix>upstream_refresh_lock:<tsid> <random token> NX PX <ttl>``, released by a
compare-and-delete script so a holder whose lock expired never frees another's.
"""

from __future__ import annotations

import hashlib
import math
import secrets

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.models import UpstreamTokenSession
from authproxy.storage.redis.connection import LuaScript, dumps, loads
from authproxy.storage.redis.owned import OwnedCollection
from authproxy.storage.redis.sealing import AtRestSealer
from authproxy.storage.sessions import IUpstreamSessions

UNLOCK_REFRESH = LuaScript(
    "unlock_refresh",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)


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

    def _lock_key(self, tsid: str) -> str:
        return self._sessions.key("upstream_refresh_lock", tsid)

    def lock_refresh(self, tsid: str, ttl: float) -> Deferred[str | None]:
        """A lock token, or None while another replica refreshes ``tsid``."""
        token = secrets.token_urlsafe(16)
        ms = max(1, math.ceil(ttl * 1000))
        d = self._sessions.redis.execute_command("SET", self._lock_key(tsid), token, "NX", "PX", ms)
        return d.addCallback(lambda reply: token if reply is not None else None)

    def unlock_refresh(self, tsid: str, lock: str) -> Deferred[None]:
        """Release the lock if ``lock`` still holds it."""
        d = UNLOCK_REFRESH(self._sessions.redis, [self._lock_key(tsid)], [lock])
        return d.addCallback(lambda _: None)
