"""RedisClients: registered clients in Redis, shared by every replica."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.clients import IClients, client_expiry
from authproxy.storage.models import RegisteredClient
from authproxy.storage.redis.client_cache import ClientCache
from authproxy.storage.redis.connection import dumps, loads
from authproxy.storage.redis.owned import OwnedCollection, owned_script

# A use of a live client: last_used_at beside the record; with an unused-client ttl
# (arg(3), '' for none) it expires that long after max(the use, its creation), as
# client_expiry says; never again an eviction candidate.
TOUCH_CLIENT = owned_script(
    "touch_client",
    """
local id, now, unused_ttl = arg(1), tonumber(arg(2)), tonumber(arg(3))
if not live(id, now) then return 0 end
local key = rprefix .. id
redis.call('HSET', key, 'last_used_at', arg(2))
if unused_ttl then
  local created_at = tonumber(cjson.decode(redis.call('HGET', key, 'record')).created_at)
  local expires_at = math.max(now, created_at) + unused_ttl
  redis.call('HSET', key, 'expires_at', string.format('%.17g', expires_at))
  redis.call('PEXPIRE', key, math.max(1, math.ceil((expires_at - now) * 1000)))
  redis.call('ZADD', all, expires_at, id)
end
uncandidate(id, owners, owner_of, oprefix)
return 1
""",
)


@implementer(IClients)
class RedisClients:
    """Clients until unused for ``unused_client_ttl`` seconds (None: forever, no Redis TTL).

    Only never-used clients are eviction candidates (by the source that registered them);
    when every client has been used, ``add_client`` fails with StorageFull. Used clients
    are read and their uses written through a :class:`ClientCache` (staleness bound: 5 s).
    """

    def __init__(self, clients: OwnedCollection, unused_client_ttl: float | None) -> None:
        self._clients = clients
        self._unused_client_ttl = unused_client_ttl
        self._cache = ClientCache(unused_client_ttl)

    def _client_expiry(self, client: RegisteredClient) -> float:
        return client_expiry(client, self._unused_client_ttl)

    def add_client(self, client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict the oldest never-used client of the owner
        holding the most (StorageFull if none)."""
        return self._clients.put(
            client.client_id,
            client.owner,
            dumps(client),
            self._client_expiry(client),
            candidate=client.last_used_at is None,
        )

    def get_client(self, client_id: str) -> Deferred[RegisteredClient | None]:
        """The client, or None when unknown or expired for lack of use."""
        now = self._clients.now()
        cached = self._cache.get(client_id, now)
        if cached is not None:
            return defer.succeed(cached)
        d = self._clients.get_fields(client_id, "last_used_at")

        def client(values: list[Any] | None) -> RegisteredClient | None:
            if values is None:
                return None
            record = loads(str(values[0]), RegisteredClient)
            if values[1] is not None:
                record = attrs.evolve(record, last_used_at=float(values[1]))
            self._cache.keep(record, now)
            return record

        return d.addCallback(client)

    def touch_client(self, client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry, in one Lua
        step (a token grant's last round trip). ``last_used_at`` lives beside the record.

        Two replicas touching at once both write the same kind of value: the later wins.
        A use within 5 s of one this process recorded is not written (see ClientCache).
        """
        now = self._clients.now()
        if self._cache.use_recorded_lately(client_id, now):
            return defer.succeed(None)
        ttl = self._unused_client_ttl
        d = self._clients.script(
            TOUCH_CLIENT, [], client_id, repr(now), "" if ttl is None else repr(ttl)
        )

        def recorded(live: Any) -> None:
            if int(live):
                self._cache.record_use(client_id, now)
            else:
                self._cache.forget(client_id)

        return d.addCallback(recorded)
