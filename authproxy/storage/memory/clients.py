"""MemoryClients: registered clients in process memory."""

from __future__ import annotations

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.clients import IClients, client_expiry
from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.memory.expiring import ExpiringMap, detached
from authproxy.storage.memory.ledger import CapLedger, sweep_owned
from authproxy.storage.models import RegisteredClient


@implementer(IClients)
class MemoryClients:
    """Clients until unused for ``unused_client_ttl`` seconds (None: forever).

    At the cap only never-used clients (``last_used_at`` None) can be evicted, by owner (the
    source that registered them); when every client has been used, ``add_client`` fails with
    :class:`StorageFull`.
    """

    def __init__(self, ledger: CapLedger, cap: int, unused_client_ttl: float | None) -> None:
        self._ledger = ledger
        self._unused_client_ttl = unused_client_ttl
        self._clients: ExpiringMap[str, RegisteredClient] = ExpiringMap()
        # never-used clients by the source that registered them: the eviction candidates
        self._never_used = OwnerIndex()
        ledger.register("clients", cap, self._clients, sweep_owned(self._clients, self._never_used))

    def _client_expiry(self, client: RegisteredClient) -> float:
        return client_expiry(client, self._unused_client_ttl)

    def add_client(self, client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict the oldest never-used client (StorageFull if none)."""
        key = client.client_id
        if self._ledger.full("clients", self._clients, key):
            victim = self._never_used.victim(client.owner)
            if victim is None:
                return defer.fail(self._ledger.refuse("clients", None))
            self._clients.pop(victim[0])
            self._never_used.discard(victim[0])
            self._ledger.count_eviction("clients")
        self._clients.set(key, detached(client), self._client_expiry(client))
        if client.last_used_at is None:
            self._never_used.add(key, client.owner)
        else:
            self._never_used.discard(key)
        return defer.succeed(None)

    def get_client(self, client_id: str) -> Deferred[RegisteredClient | None]:
        """The client, or None when unknown or expired for lack of use."""
        client = self._clients.get(client_id, self._ledger.now())
        return defer.succeed(None if client is None else detached(client))

    def touch_client(self, client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry."""
        now = self._ledger.now()
        client = self._clients.get(client_id, now)
        if client is not None:
            client = attrs.evolve(client, last_used_at=now)
            self._clients.set(client_id, client, self._client_expiry(client))
            self._never_used.discard(client_id)
        return defer.succeed(None)
