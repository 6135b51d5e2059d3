"""OwnedCollection: a capped Redis collection of records, fair between their owners.

The Redis form of the memory store's CapLedger and OwnerIndex, for logins in progress,
authorization codes, upstream sessions and registered clients. Per collection:

- ``r:<id>``: the record, a hash: ``record`` (JSON), ``expires_at``, ``owner``, and any
  field a concern changes in place (``redeemed``...), with a Redis TTL;
- ``i:all``: a sorted set of the ids by expiry (the count against the cap, and the expired
  ones to drop first, at most 100 per write: never an unbounded scan);
- ``i:owners``: a sorted set of owners by how many eviction candidates each holds, and
  ``i:owner:<owner>``: that owner's candidates, oldest first; ``i:owner_of``: id to owner.

At the cap the oldest candidate of the owner holding the most goes first, the newcomer's own
whenever it holds as many as anyone, in one Lua script (``put_owned``), so two replicas
writing at once cannot both take the last place.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from authproxy.storage.capacity import StorageFull
from authproxy.storage.redis.connection import LuaScript, RedisCollection, ttl_ms

# Shared by the scripts. KEYS: the collection's indexes (all, owners, owner_of, seq, spent),
# then its child collection's (all, owners, owner_of): a token family's refresh tokens leave
# with it. ARGV[1..4]: the record and owner-index key prefixes of both; a script's own
# arguments follow (``arg(1)``...).
PRELUDE = """
local all, owners, owner_of, seq, spent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local rprefix, oprefix, child_rprefix, child_oprefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local function arg(i) return ARGV[4 + i] end
local function uncandidate(id, owners_, owner_of_, oprefix_)
  local owner = redis.call('HGET', owner_of_, id)
  if owner then
    redis.call('HDEL', owner_of_, id)
    if redis.call('ZREM', oprefix_ .. owner, id) == 1 then
      if tonumber(redis.call('ZINCRBY', owners_, -1, owner)) <= 0 then
        redis.call('ZREM', owners_, owner)
      end
    end
  end
end
local function unindex(id, all_, owners_, owner_of_, oprefix_)
  redis.call('ZREM', all_, id)
  uncandidate(id, owners_, owner_of_, oprefix_)
end
local function forget(id)
  if child_rprefix ~= '' then
    local children = rprefix .. id .. '|children'
    for _, child in ipairs(redis.call('SMEMBERS', children)) do
      redis.call('DEL', child_rprefix .. child)
      unindex(child, KEYS[6], KEYS[7], KEYS[8], child_oprefix)
    end
    redis.call('DEL', children)
  end
  redis.call('ZREM', spent, id)
  unindex(id, all, owners, owner_of, oprefix)
  return redis.call('DEL', rprefix .. id)
end
local function candidate(id, owner)
  if redis.call('HSETNX', owner_of, id, owner) == 1 then
    redis.call('ZADD', oprefix .. owner, redis.call('INCR', seq), id)
    redis.call('ZINCRBY', owners, 1, owner)
  end
end
local function sweep(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', all, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(gone) do forget(id) end
  return #gone
end
local function live(id, now)
  local expires_at = redis.call('HGET', rprefix .. id, 'expires_at')
  return expires_at and tonumber(expires_at) > now
end
-- The id to evict so that owner can add one, or nil. 'largest': the oldest candidate of
-- the owner holding the most (the newcomer's own when it holds as many); 'own': a spent
-- record first, else the newcomer's oldest only when it holds the most and more than one.
local function victim(owner, policy)
  local first = redis.call('ZRANGE', spent, 0, 0)[1]
  if first then return first end
  local top = redis.call('ZREVRANGE', owners, 0, 0, 'WITHSCORES')
  if #top == 0 then return nil end
  local own = tonumber(redis.call('ZSCORE', owners, owner) or '0')
  local from = owner
  if own < tonumber(top[2]) then
    if policy == 'own' then return nil end
    from = top[1]
  elseif policy == 'own' and own < 2 then
    return nil
  end
  return redis.call('ZRANGE', oprefix .. from, 0, 0)[1]
end
-- True when a new id fits: below the cap once the expired are gone, or a victim exists.
local function full(id, now, cap)
  if redis.call('ZSCORE', all, id) or redis.call('ZCARD', all) < cap then return false end
  sweep(now, 100)
  return redis.call('ZCARD', all) >= cap
end
local function soonest()
  return redis.call('ZRANGE', all, 0, 0, 'WITHSCORES')[2] or ''
end
"""


def owned_script(name: str, *parts: str) -> LuaScript:
    """A script over an OwnedCollection: the PRELUDE, then ``parts`` (the script's own Lua)."""
    return LuaScript(name, PRELUDE + "".join(parts))


# Store a record under the cap (arg(1..9), see OwnedCollection.put): {1 when a live record
# was evicted, ''}, or {-1, soonest expiry} when the cap is reached and nothing may be
# evicted. A script that stores and then does more (PUT_OWNED_PARTS + its own Lua) starts
# with ``local stored = put()``; its own arguments are arg(10) on.
PUT_OWNED_PARTS = """
local function put()
  local id, owner, now, cap, policy = arg(1), arg(2), tonumber(arg(3)), tonumber(arg(4)), arg(5)
  local record, expires_at, ttl, is_candidate = arg(6), arg(7), tonumber(arg(8)), arg(9)
  local evicted = 0
  if full(id, now, cap) then
    local gone = victim(owner, policy)
    if not gone then return {-1, soonest()} end
    if not redis.call('ZSCORE', spent, gone) then evicted = 1 end
    forget(gone)
  end
  -- a replaced record keeps its children (a family's refresh tokens), not its old fields
  redis.call('DEL', rprefix .. id)
  redis.call('ZREM', spent, id)
  unindex(id, all, owners, owner_of, oprefix)
  redis.call('HSET', rprefix .. id, 'record', record, 'expires_at', expires_at, 'owner', owner)
  if ttl > 0 then redis.call('PEXPIRE', rprefix .. id, ttl) end
  redis.call('ZADD', all, expires_at, id)
  if is_candidate == '1' then candidate(id, owner) end
  return {evicted, ''}
end
"""

PUT_OWNED = owned_script("put_owned", PUT_OWNED_PARTS, "return put()\n")

# Whether one more record of ``owner`` fits: {0, ''} or {-1, soonest expiry}.
ROOM = owned_script(
    "room",
    """
local owner, now, cap, policy = arg(1), tonumber(arg(2)), tonumber(arg(3)), arg(4)
if full('', now, cap) and not victim(owner, policy) then return {-1, soonest()} end
return {0, ''}
""",
)

# Replace the record of a live id (never revive a gone one); arg(6) '1' also stops it being
# an eviction candidate (a client once used).
UPDATE_OWNED = owned_script(
    "update_owned",
    """
local id, now, record, expires_at, ttl = arg(1), tonumber(arg(2)), arg(3), arg(4), tonumber(arg(5))
if not live(id, now) then return 0 end
redis.call('HSET', rprefix .. id, 'record', record, 'expires_at', expires_at)
if ttl > 0 then redis.call('PEXPIRE', rprefix .. id, ttl) else redis.call('PERSIST', rprefix .. id) end
redis.call('ZADD', all, expires_at, id)
if arg(6) == '1' then uncandidate(id, owners, owner_of, oprefix) end
return 1
""",
)

# Read and delete in one step: a login state completes the flow once.
TAKE_OWNED = owned_script(
    "take_owned",
    """
local id, now = arg(1), tonumber(arg(2))
local record = nil
if live(id, now) then record = redis.call('HGET', rprefix .. id, 'record') end
forget(id)
return record
""",
)

DELETE_OWNED = owned_script("delete_owned", "forget(arg(1))\nreturn 1\n")

SWEEP_OWNED = owned_script(
    "sweep_owned",
    "return {sweep(tonumber(arg(1)), tonumber(arg(2))), redis.call('ZCARD', all)}\n",
)


class OwnedCollection(RedisCollection):
    """One capped collection; the concerns build their records on top of it.

    ``policy`` is who may lose a record at the cap: ``"largest"`` (the owner holding the
    most eviction candidates) or ``"own"`` (only the newcomer's own, when it holds the most
    and more than one; token families). Records marked spent go first either way.
    ``child``: a collection whose records leave with their parent (a family's refresh
    tokens), listed with :meth:`add_child`.
    """

    def __init__(
        self,
        redis: Any,
        key_prefix: str,
        clock: Any,
        name: str,
        cap: int,
        refusals: dict[str, int],
        policy: str = "largest",
        child: OwnedCollection | None = None,
    ) -> None:
        super().__init__(redis, key_prefix, clock)
        if cap < 1:
            raise ValueError(f"max_{name} must be at least 1, not {cap}")
        self.name = name
        self.cap = cap
        self.policy = policy
        self._refusals = refusals
        self.indexes = [self.key(name, "i", index) for index in ("all", "owners", "owner_of")]
        self.record_prefix = self.key(name, "r", "")
        self.owner_prefix = self.key(name, "i", "owner", "")
        own = [*self.indexes, self.key(name, "i", "seq"), self.key(name, "i", "spent")]
        if child is None:
            self._keys = own + [self.key(name, "i", "none")] * 3
            self._prefixes = [self.record_prefix, self.owner_prefix, "", ""]
        else:
            self._keys = own + child.indexes
            self._prefixes = [
                self.record_prefix,
                self.owner_prefix,
                child.record_prefix,
                child.owner_prefix,
            ]

    def record_key(self, record_id: str) -> str:
        return self.record_prefix + record_id

    def _run(self, script: LuaScript, *args: Any) -> Deferred[Any]:
        return script(self.redis, self._keys, [*self._prefixes, *args])

    def _refused(self, result: list[Any], now: float) -> StorageFull | None:
        if int(result[0]) >= 0:
            return None
        self._refusals[self.name] = self._refusals.get(self.name, 0) + 1
        retry_after = None
        if result[1]:
            retry_after = min(3600.0, max(1.0, float(result[1]) - now))
        return StorageFull(f"{self.name} cap of {self.cap} reached", self.name, retry_after)

    def put(
        self,
        record_id: str,
        owner: str,
        record: str,
        expires_at: float,
        candidate: bool = True,
        then: tuple[LuaScript, list[str], list[Any]] | None = None,
    ) -> Deferred[None]:
        """Store; at the cap evict by ``policy``, or fail with StorageFull. ``then``: a
        script that stores (``PUT_OWNED_PARTS``) and does more in the same step, its extra
        keys (``KEYS[9]`` on) and arguments (``arg(10)`` on)."""
        now = self.now()
        script, extra_keys, extra = then or (PUT_OWNED, [], [])
        d = self.script(
            script,
            extra_keys,
            record_id,
            owner,
            repr(now),
            self.cap,
            self.policy,
            record,
            repr(expires_at),
            ttl_ms(expires_at, now),
            "1" if candidate else "0",
            *extra,
        )

        def stored(result: list[Any]) -> None:
            refused = self._refused(result, now)
            if refused is not None:
                raise refused

        return d.addCallback(stored)

    def room(self, owner: str) -> Deferred[StorageFull | None]:
        """None when one more record of ``owner`` would fit, else the StorageFull to raise."""
        now = self.now()
        d = self._run(ROOM, owner, repr(now), self.cap, self.policy)
        return d.addCallback(self._refused, now)

    def get_fields(self, record_id: str, *fields: str) -> Deferred[list[Any] | None]:
        """``record`` and the other fields of a live record, or None."""
        now = self.now()
        d = self.redis.hmget(self.record_key(record_id), ["expires_at", "record", *fields])

        def live(values: list[Any]) -> list[Any] | None:
            if values[0] is None or float(values[0]) <= now:
                return None
            return list(values[1:])

        return d.addCallback(live)

    def update(
        self, record_id: str, record: str, expires_at: float, no_longer_candidate: bool = False
    ) -> Deferred[bool]:
        """Replace a live record; False when it is gone."""
        now = self.now()
        d = self._run(
            UPDATE_OWNED,
            record_id,
            repr(now),
            record,
            repr(expires_at),
            ttl_ms(expires_at, now),
            "1" if no_longer_candidate else "0",
        )
        return d.addCallback(lambda n: bool(int(n)))

    def take(self, record_id: str) -> Deferred[str | None]:
        """The record's JSON, deleted in the same step; None when gone."""
        return self._run(TAKE_OWNED, record_id, repr(self.now()))

    def delete(self, record_id: str) -> Deferred[None]:
        return self._run(DELETE_OWNED, record_id).addCallback(lambda _: None)

    def sweep(self, limit: int = 1000) -> Deferred[tuple[int, int]]:
        """Drop up to ``limit`` expired records; (how many went, how many are left)."""
        d = self._run(SWEEP_OWNED, repr(self.now()), limit)
        return d.addCallback(lambda r: (int(r[0]), int(r[1])))

    def script(self, script: LuaScript, extra_keys: list[str], *args: Any) -> Deferred[Any]:
        """Run a concern's own script (an :func:`owned_script`) with this collection's keys,
        then ``extra_keys`` from ``KEYS[9]`` on."""
        return script(self.redis, self._keys + extra_keys, [*self._prefixes, *args])
