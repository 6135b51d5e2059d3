"""RedisTokenFamilies: token families and refresh tokens in Redis, rotated race-free.

A family is a record (``families`` collection) plus a hash of its access tokens' jtis and
exps; a refresh token is a record (``refresh_tokens``) whose rotation fields live beside it.
Rotation (``mark_rotated``) and revocation (``revoke_family``, which deny-lists every jti
of the family and announces the new revocation generation) are each one Lua script.

Caps: both collections are bounded, and at the cap they refuse (StorageFull) instead of
evicting; the memory store's finer rules (a revoked family or the flooding client's rotated
tokens make room first) are not implemented here yet.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList
from zope.interface import implementer

from authproxy.storage.families import ITokenFamilies
from authproxy.storage.models import RefreshToken, TokenFamily
from authproxy.storage.redis.connection import LuaScript, dumps, loads, ttl_ms
from authproxy.storage.redis.owned import PUT_OWNED_PARTS, OwnedCollection, owned_script
from authproxy.storage.redis.revocations import DENY, RedisRevocations

# KEYS[9..11]: the deny list's sorted set and generation counter, the family's jti hash;
# arg(1..4): now, the deny-list leeway, the jti key prefix, the revocations channel.
_FAMILY_LOCALS = """
local revoked, generation, jtis = KEYS[9], KEYS[10], KEYS[11]
local now, leeway, jti_prefix, channel = tonumber(arg(1)), tonumber(arg(2)), arg(3), arg(4)
local id = arg(5)
if not live(id, now) then return nil end
local family = rprefix .. id
"""

# Revoke a live family: mark it (and spent: first to go at the cap), deny-list its access
# tokens, announce the new generation; the record and its jtis, or nil.
REVOKE_FAMILY = owned_script(
    "revoke_family",
    _FAMILY_LOCALS,
    DENY,
    """
redis.call('HSET', family, 'revoked', '1')
redis.call('ZADD', spent, redis.call('INCR', seq), id)
local all = redis.call('HGETALL', jtis)
for i = 1, #all, 2 do deny(all[i], all[i + 1]) end
announce(1, generation, channel)
return {redis.call('HGET', family, 'record'), all}
""",
)

# Record an access token of a live family (dropping its expired ones now and then); when the
# family is already revoked, deny-list it at once. 1 when the deny list changed.
ADD_FAMILY_ACCESS_TOKEN = owned_script(
    "add_family_access_token",
    _FAMILY_LOCALS,
    DENY,
    """
local jti, exp = arg(6), arg(7)
redis.call('HSET', jtis, jti, exp)
local ttl = redis.call('PTTL', family)
if ttl > 0 then redis.call('PEXPIRE', jtis, ttl) end
if redis.call('HLEN', jtis) % 64 == 0 then
  local all = redis.call('HGETALL', jtis)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) + leeway <= now then redis.call('HDEL', jtis, all[i]) end
  end
end
if redis.call('HGET', family, 'revoked') then
  return announce(deny(jti, exp), generation, channel)
end
return 0
""",
)

# A refresh token's rotation time and successor response, set beside its record.
_ROTATION = """
local function rotate(id, rotated_at, successor_response)
  redis.call('HSET', rprefix .. id, 'rotated_at', rotated_at, 'successor_response', successor_response)
end
"""

# Store a refresh token (PUT_OWNED's arguments) and, in the same step, list it among its
# family's children (KEYS[9]), which live as long as the family's longest-lived token, and
# record a rotation it came with (arg(10), arg(11); '' when none).
PUT_REFRESH_TOKEN = owned_script(
    "put_refresh_token",
    PUT_OWNED_PARTS,
    _ROTATION,
    """
local stored = put()
if stored[1] < 0 then return stored end
local id, ttl = arg(1), tonumber(arg(8))
redis.call('SADD', KEYS[9], id)
if ttl > 0 and redis.call('PTTL', KEYS[9]) < ttl then redis.call('PEXPIRE', KEYS[9], ttl) end
if arg(10) ~= '' then rotate(id, arg(10), arg(11)) end
return stored
""",
)

# Rotate a live, unrotated refresh token: it becomes an eviction candidate (kept only to
# detect reuse). 1 when this call rotated it, 0 when it lost the race or is gone.
MARK_ROTATED = owned_script(
    "mark_rotated",
    _ROTATION,
    """
local id, now = arg(1), tonumber(arg(2))
if not live(id, now) or redis.call('HEXISTS', rprefix .. id, 'rotated_at') == 1 then return 0 end
rotate(id, arg(3), arg(4))
candidate(id, redis.call('HGET', rprefix .. id, 'owner'))
return 1
""",
)


# A live refresh token's record, rotation fields and whether its family (ARGV[2] .. its
# family_id) is live and unrevoked, or nil: a refresh grant's reads in one round trip.
READ_REFRESH_TOKEN = LuaScript(
    "read_refresh_token",
    """
local now = tonumber(ARGV[1])
local token = redis.call('HMGET', KEYS[1], 'expires_at', 'record', 'rotated_at', 'successor_response')
if not token[1] or tonumber(token[1]) <= now then return nil end
local family = redis.call('HMGET', ARGV[2] .. cjson.decode(token[2]).family_id, 'expires_at', 'record', 'revoked')
local live = family[1] and tonumber(family[1]) > now and not family[3]
  and not cjson.decode(family[2]).revoked
return {token[2], token[3], token[4], live and 1 or 0}
""",
)


def _refresh_token(values: list[Any]) -> RefreshToken:
    """A refresh token from its record, rotated_at and successor_response fields."""
    record = loads(str(values[0]), RefreshToken)
    if values[1] is None:
        return record
    successor = json.loads(values[2]) if values[2] else None
    return attrs.evolve(record, rotated_at=float(values[1]), successor_response=successor)


def _family(record: Any, revoked: Any, jtis: list[Any]) -> TokenFamily:
    pairs = tuple((str(jtis[i]), float(jtis[i + 1])) for i in range(0, len(jtis), 2))
    family = loads(str(record), TokenFamily)
    return attrs.evolve(family, revoked=family.revoked or bool(revoked), access_token_jtis=pairs)


@implementer(ITokenFamilies)
class RedisTokenFamilies:
    """Families and refresh tokens; revoking a family deny-lists its access tokens."""

    def __init__(
        self,
        families: OwnedCollection,
        refresh_tokens: OwnedCollection,
        revocations: RedisRevocations,
    ) -> None:
        self._families = families
        self._refresh_tokens = refresh_tokens
        self._revocations = revocations

    def _jtis_key(self, family_id: str) -> str:
        return self._families.record_key(family_id) + "|jtis"

    def _family_script(self, script: LuaScript, family_id: str, *args: Any) -> Deferred[Any]:
        revocations = self._revocations
        keys = [revocations.index, revocations.counter, self._jtis_key(family_id)]
        return self._families.script(
            script,
            keys,
            repr(self._families.now()),
            repr(revocations.leeway),
            revocations.jti_prefix,
            revocations.channel,
            family_id,
            *args,
        )

    def issuance_room(self, client_id: str, new_family: bool) -> Deferred[None]:
        """Fail with StorageFull when one more issuance cannot be stored: while the deny list
        is full (a revocation is never forgotten), when no rotated refresh token could make
        room, or (``new_family``) when only another client's family could."""
        # all asked at once (one round trip's wait, not three); the first refusal counts
        checks = [self._revocations.deny_list_room(), self._refresh_tokens.room(client_id)]
        if new_family:
            checks.append(self._families.room(client_id))

        def first_refusal(results: list[tuple[bool, Any]]) -> None:
            for succeeded, result in results:
                if not succeeded:
                    result.raiseException()  # Redis unreachable, say
                if result is not None:
                    raise result

        return DeferredList(checks, consumeErrors=True).addCallback(first_refusal)

    def put_family(self, family: TokenFamily) -> Deferred[None]:
        """Store a new token family; StorageFull when only another client's family could go
        (a revoked family goes first, then the client's own oldest when it holds the most)."""
        record = dumps(attrs.evolve(family, access_token_jtis=()))
        d = self._families.put(family.family_id, family.client_id, record, family.expires_at)
        jtis = family.access_token_jtis
        redis = self._families.redis

        def store_jtis(_: Any) -> Deferred[Any]:
            key = self._jtis_key(family.family_id)
            d = redis.delete(key)
            if jtis:
                d.addCallback(lambda _: redis.hmset(key, {jti: repr(exp) for jti, exp in jtis}))
                ttl = ttl_ms(family.expires_at, self._families.now())
                d.addCallback(lambda _: redis.execute_command("PEXPIRE", key, ttl))
            return d

        return d.addCallback(store_jtis).addCallback(lambda _: None)

    def get_family(self, family_id: str) -> Deferred[TokenFamily | None]:
        """The family, or None."""
        d = self._families.get_fields(family_id, "revoked")

        def with_jtis(values: list[Any] | None) -> Any:
            if values is None:
                return None
            d = self._families.redis.hgetall(self._jtis_key(family_id))
            return d.addCallback(
                lambda jtis: _family(values[0], values[1], [x for kv in jtis.items() for x in kv])
            )

        return d.addCallback(with_jtis)

    def is_family_live(self, family_id: str) -> Deferred[bool]:
        """Whether the family exists and is not revoked: one HMGET, its jti hash unread."""
        d = self._families.get_fields(family_id, "revoked")

        def live(values: list[Any] | None) -> bool:
            if values is None or values[1]:
                return False
            return not json.loads(values[0]).get("revoked")  # stored revoked (rare)

        return d.addCallback(live)

    def add_family_access_token(self, family_id: str, jti: str, exp: float) -> Deferred[None]:
        """Record an access token issued in the family (deny-listed at once if revoked)."""
        d = self._family_script(ADD_FAMILY_ACCESS_TOKEN, family_id, jti, repr(exp))

        def added(changed: Any) -> None:
            if changed is not None and int(changed):
                self._revocations.bump()

        return d.addCallback(added)

    def revoke_family(self, family_id: str) -> Deferred[TokenFamily | None]:
        """Mark the family revoked, deny-list its access tokens; returns the family (or None)."""
        d = self._family_script(REVOKE_FAMILY, family_id)

        def revoked(result: Any) -> TokenFamily | None:
            if result is None:
                return None
            self._revocations.bump()
            return _family(result[0], True, result[1])

        return d.addCallback(revoked)

    def put_refresh_token(self, token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at; at the cap a rotated token (of the client holding
        the most) makes room, and StorageFull when there is none: a current refresh token
        is never evicted. The token leaves with its family."""
        record = dumps(attrs.evolve(token, rotated_at=None, successor_response=None))
        rotated = token.rotated_at is not None
        children = self._families.record_key(token.family_id) + "|children"
        rotation = ["", ""]
        if rotated:
            rotation = [repr(token.rotated_at), dumps(token.successor_response)]
        return self._refresh_tokens.put(
            token.token_id,
            token.client_id,
            record,
            token.expires_at,
            candidate=rotated,
            then=(PUT_REFRESH_TOKEN, [children], rotation),
        )

    def get_refresh_token(self, token_id: str) -> Deferred[RefreshToken | None]:
        """The token record, or None."""
        d = self._refresh_tokens.get_fields(token_id, "rotated_at", "successor_response")
        return d.addCallback(lambda values: None if values is None else _refresh_token(values))

    def get_refresh_token_in_family(
        self, token_id: str
    ) -> Deferred[tuple[RefreshToken, bool] | None]:
        """The token record and whether its family is live, read in one Lua step."""
        tokens = self._refresh_tokens
        d = READ_REFRESH_TOKEN(
            tokens.redis,
            [tokens.record_key(token_id)],
            [repr(tokens.now()), self._families.record_prefix],
        )
        return d.addCallback(
            lambda values: None if values is None else (_refresh_token(values), bool(values[3]))
        )

    def mark_rotated(
        self, token_id: str, rotated_at: float, successor_response: dict[str, object]
    ) -> Deferred[bool]:
        """Record the rotation in one Lua step; False when already rotated (lost the race)
        or gone: of two replicas rotating at once, exactly one wins."""
        d = self._refresh_tokens.script(
            MARK_ROTATED,
            [],
            token_id,
            repr(self._refresh_tokens.now()),
            repr(rotated_at),
            dumps(successor_response),
        )
        return d.addCallback(lambda n: bool(int(n)))
