"""RedisClients: registered clients in Redis, shared by every replica."""

from __future__ import annotations

import attrs
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.clients import IClients, client_expiry
from authproxy.storage.models import RegisteredClient
from authproxy.storage.redis.connection import dumps, loads
from authproxy.storage.redis.owned import OwnedCollection


@implementer(IClients)
class RedisClients:
    """Clients until unused for ``unused_client_ttl`` seconds (None: forever, no Redis TTL).

    Only never-used clients are eviction candidates (by the source that registered them);
    when every client has been used, ``add_client`` fails with StorageFull.
    """

    def __init__(self, clients: OwnedCollection, unused_client_ttl: float | None) -> None:
        self._clients = clients
        self._unused_client_ttl = unused_client_ttl

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
        d = self._clients.get_fields(client_id)
        return d.addCallback(lambda v: None if v is None else loads(str(v[0]), RegisteredClient))

    def touch_client(self, client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry.

        Two replicas touching at once both write the same kind of value: the later wins.
        """
        now = self._clients.now()

        def touch(client: RegisteredClient | None) -> Deferred[None] | None:
            if client is None:
                return None
            client = attrs.evolve(client, last_used_at=now)
            d = self._clients.update(
                client_id, dumps(client), self._client_expiry(client), no_longer_candidate=True
            )
            return d.addCallback(lambda _: None)

        return self.get_client(client_id).addCallback(touch)
