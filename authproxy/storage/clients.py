"""IClients: the clients registered through RFC 7591 dynamic client registration."""

from __future__ import annotations

import math

from twisted.internet.defer import Deferred
from zope.interface import Interface

from authproxy.storage.models import RegisteredClient


class IClients(Interface):
    """Registered clients, expiring when unused for the configured time."""

    def add_client(client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict a never-used client, the oldest of the owner
        holding the most (StorageFull if none): used clients are never evicted."""

    def get_client(client_id: str) -> Deferred[RegisteredClient | None]:
        """The client, or None when unknown or expired for lack of use."""

    def touch_client(client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry."""


def client_expiry(client: RegisteredClient, unused_client_ttl: float | None) -> float:
    """When ``client`` expires for lack of use: ``unused_client_ttl`` seconds after its last
    use (or its registration), never when that is None."""
    if unused_client_ttl is None:
        return math.inf
    base = client.created_at if client.last_used_at is None else client.last_used_at
    return max(base, client.created_at) + unused_client_ttl
