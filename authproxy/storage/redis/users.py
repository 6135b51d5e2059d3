"""RedisUsers: upstream identities to user ids in Redis."""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.redis.connection import LuaScript, RedisCollection
from authproxy.storage.users import IUsers

# Sliding TTL: an identity not seen for this long is forgotten (its next login gets a new
# user id), the Redis form of the memory store's least-recently-seen eviction.
USER_TTL_MS = 400 * 86400 * 1000

# The id already stored, else the proposed one; either way its TTL starts again.
USER_ID_FOR = LuaScript(
    "user_id_for",
    """
local id = redis.call('GET', KEYS[1])
if not id then id = ARGV[1]; redis.call('SET', KEYS[1], id) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
""",
)


@implementer(IUsers)
class RedisUsers(RedisCollection):
    """One key per upstream identity; the first replica to see it decides the user id."""

    def user_id_for(self, upstream_name: str, upstream_subject: str) -> Deferred[str]:
        """The stable internal user id for an upstream identity, created on first sight."""
        # the identity in the key is length-prefixed: no separator can be smuggled in
        key = self.key("users", f"{len(upstream_name)}:{upstream_name}:{upstream_subject}")
        proposed = secrets.token_urlsafe(16)
        d: Deferred[Any] = USER_ID_FOR(self.redis, [key], [proposed, USER_TTL_MS])
        return d.addCallback(str)
