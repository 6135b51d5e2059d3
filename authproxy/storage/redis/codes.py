"""RedisAuthorizationCodes: authorization codes in Redis, redeemed once across replicas."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.codes import IAuthorizationCodes
from authproxy.storage.models import AuthorizationCode
from authproxy.storage.redis.connection import LuaScript, dumps, loads
from authproxy.storage.redis.owned import OwnedCollection

# Mark a live code redeemed; the record, whether it was redeemed before, and its family.
REDEEM_CODE = LuaScript(
    "redeem_code",
    """
local values = redis.call('HMGET', KEYS[1], 'expires_at', 'record', 'redeemed', 'family_id')
if not values[1] or tonumber(values[1]) <= tonumber(ARGV[1]) then return nil end
if not values[3] then redis.call('HSET', KEYS[1], 'redeemed', '1') end
return {values[2], values[3] or '', values[4] or ''}
""",
)

SET_CODE_FAMILY = LuaScript(
    "set_code_family",
    """
local expires_at = redis.call('HGET', KEYS[1], 'expires_at')
if expires_at and tonumber(expires_at) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'family_id', ARGV[2])
end
return 1
""",
)


def _code(record: str, redeemed: Any, family_id: Any) -> AuthorizationCode:
    code = loads(record, AuthorizationCode)
    changes: dict[str, Any] = {}
    if redeemed:
        changes["redeemed"] = True
    if family_id:
        changes["family_id"] = str(family_id)
    return attrs.evolve(code, **changes) if changes else code


@implementer(IAuthorizationCodes)
class RedisAuthorizationCodes:
    """Codes until their expiry; at the cap, evicted by user. ``redeemed`` and the family
    live beside the record, so that redemption is one Lua step (``redeem_code``)."""

    def __init__(self, codes: OwnedCollection) -> None:
        self._codes = codes

    def put_code(self, code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""
        return self._codes.put(code.code_id, code.user_id, dumps(code), code.expires_at)

    def redeem_code(self, code_id: str) -> Deferred[AuthorizationCode | None]:
        """Mark redeemed; the record as it was before (``redeemed`` True means replay)."""
        key = self._codes.record_key(code_id)
        d = REDEEM_CODE(self._codes.redis, [key], [repr(self._codes.now())])
        return d.addCallback(lambda r: None if r is None else _code(*r))

    def set_code_family(self, code_id: str, family_id: str) -> Deferred[None]:
        """Remember which token family the first redemption created."""
        key = self._codes.record_key(code_id)
        d = SET_CODE_FAMILY(self._codes.redis, [key], [repr(self._codes.now()), family_id])
        return d.addCallback(lambda _: None)
