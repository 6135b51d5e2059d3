"""RedisRevocations: the access-token deny list in Redis, and its generation.

Every deny-listing (here or in a family revocation) also increments a generation counter in
Redis and publishes it on ``<key_prefix>revocations``, in the same Lua step. This replica
bumps its own ``generation`` at once for what it revoked; :meth:`poll_generation` reads the
counter to learn of other replicas' revocations, the safety net beside the pub/sub
subscription of :class:`~authproxy.storage.redis.feed.RevocationFeed`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.capacity import StorageFull
from authproxy.storage.redis.connection import LuaScript, RedisCollection
from authproxy.storage.revocations import IRevocations

# Deny-list one jti until ``exp + leeway`` unless it already is at least that long; 1 when
# the deny list changed. Needs ``now``, ``leeway``, ``jti_prefix`` and ``revoked`` (the
# sorted set counting the deny list against its cap) as locals.
DENY = """
local function deny(jti, exp)
  local denied_until = tonumber(exp) + leeway
  if denied_until <= now then return 0 end
  local known = tonumber(redis.call('GET', jti_prefix .. jti))
  if known and known >= denied_until then return 0 end
  local ms = math.ceil((denied_until - now) * 1000)
  redis.call('SET', jti_prefix .. jti, string.format('%.17g', denied_until), 'PX', ms)
  redis.call('ZADD', revoked, denied_until, jti)
  return 1
end
local function announce(changed, generation, channel)
  if changed > 0 then
    redis.call('PUBLISH', channel, redis.call('INCR', generation))
  end
  return changed
end
"""

REVOKE_JTI = LuaScript(
    "revoke_jti",
    """
local now, leeway, jti_prefix, revoked = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], KEYS[1]
"""
    + DENY
    + "return announce(deny(ARGV[4], ARGV[5]), KEYS[2], ARGV[6])\n",
)

# The deny list is full when its live entries reach the cap: (full?, soonest expiry).
DENY_LIST_ROOM = LuaScript(
    "deny_list_room",
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then return {0, ''} end
return {1, redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]}
""",
)


@implementer(IRevocations)
class RedisRevocations(RedisCollection):
    """Revoked jtis, kept ``leeway`` seconds past their exp (the guard's clock-skew leeway),
    never evicted: a full deny list refuses issuance (``RedisTokenFamilies.issuance_room``)."""

    def __init__(self, redis: Any, key_prefix: str, clock: Any, cap: int, leeway: float) -> None:
        super().__init__(redis, key_prefix, clock)
        self.cap = cap
        self.leeway = leeway
        self.generation = 0
        self._seen_counter: int | None = None
        self.jti_prefix = self.key("revoked", "jti", "")
        self.index = self.key("revoked", "i", "all")
        self.counter = self.key("revoked", "generation")
        self.channel = self.key("revocations")

    def bump(self) -> None:
        """Tell this replica's guard that the deny list changed."""
        self.generation += 1

    def revoke_jti(self, jti: str, exp: float) -> Deferred[None]:
        """Deny-list an access token id until its exp (plus leeway)."""
        args = [repr(self.now()), repr(self.leeway), self.jti_prefix, jti, repr(exp), self.channel]
        d = REVOKE_JTI(self.redis, [self.index, self.counter], args)

        def revoked(changed: Any) -> None:
            if int(changed):
                self.bump()

        return d.addCallback(revoked)

    def is_jti_revoked(self, jti: str) -> Deferred[bool]:
        """True while the jti is deny-listed (by this clock, not only Redis's TTL)."""
        now = self.now()
        d = self.redis.get(self.jti_prefix + jti)
        return d.addCallback(lambda until: until is not None and float(until) > now)

    def deny_list_room(self) -> Deferred[StorageFull | None]:
        """The StorageFull to fail issuance with while the deny list is at its cap, or None."""
        now = self.now()
        d = DENY_LIST_ROOM(self.redis, [self.index], [repr(now), self.cap])

        def room(result: list[Any]) -> StorageFull | None:
            if not int(result[0]):
                return None
            retry_after = min(3600.0, max(1.0, float(result[1]) - now))
            return StorageFull(
                f"revoked_jtis cap of {self.cap} reached", "revoked_jtis", retry_after
            )

        return d.addCallback(room)

    def poll_generation(self) -> Deferred[int]:
        """Read the shared generation counter; bump ``generation`` when it moved (another
        replica revoked something). The safety net beside pub/sub; fires with ``generation``."""

        def seen(value: Any) -> int:
            counter = int(value or 0)
            if self._seen_counter is not None and counter != self._seen_counter:
                self.bump()
            self._seen_counter = counter
            return self.generation

        return self.redis.get(self.counter).addCallback(seen)
