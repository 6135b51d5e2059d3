"""RedisRateCounters: token buckets in Redis, so every replica limits together."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.rates import IRateCounters
from authproxy.storage.redis.connection import LuaScript, RedisCollection

# One token-bucket step: refill by the time passed, take one or say how long to wait. The
# bucket expires once it would be full again (a forgotten bucket starts full anyway).
TAKE = LuaScript(
    "take",
    """
local capacity, per_second, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(bucket[1]) or capacity, tonumber(bucket[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * per_second)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / per_second end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / per_second * 1000) + 1000)
return tostring(wait)
""",
)


@implementer(IRateCounters)
class RedisRateCounters(RedisCollection):
    """Buckets shared by every replica; each expires in Redis once full again, so the keys
    of a flood of source addresses cost memory only while they are limited."""

    def take(self, key: str, capacity: float, per_second: float) -> Deferred[float]:
        """Take one token from ``key``'s bucket: 0 when there was one, else the wait."""
        args: list[Any] = [repr(capacity), repr(per_second), repr(self.now())]
        d: Deferred[Any] = TAKE(self.redis, [self.key("rate", key)], args)
        return d.addCallback(float)
