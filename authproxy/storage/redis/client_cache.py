"""ClientCache: the used clients this process read from Redis lately, for a few seconds.

Every token request looks its client up, and every grant records the client's use: on
Redis two commands per grant whose answers hardly ever change. A registered client's record
never changes after registration except ``last_used_at``, and a client that has been used
is never evicted (only never-used ones are); it goes away only by expiring unused. So:

- Only used clients are cached (a never-used one may be evicted by another replica's
  registration at any time: it is always read from Redis).
- An entry is served for at most ``CLIENT_CACHE_SECONDS`` (5 s) after it was read, and
  never once the expiry its ``last_used_at`` implies has passed. Staleness bound across
  replicas: a client removed from Redis by other means (an operator deleting the key) is
  still known to a replica for at most 5 s. Another replica's later use only makes the
  cached expiry earlier than the real one, so an expired client is never served.
- A use within ``CLIENT_CACHE_SECONDS`` of the last one this process recorded is not written
  again: ``last_used_at`` (and the unused-client expiry, ``unused_client_ttl`` after it) may
  lag the real last use by at most 5 s, a bound to keep far below any ``unused_client_ttl``.

Bounded to ``CLIENT_CACHE_ENTRIES`` clients, the oldest read dropped first.
"""

from __future__ import annotations

import attrs

from authproxy.storage.clients import client_expiry
from authproxy.storage.memory.expiring import detached
from authproxy.storage.models import RegisteredClient

CLIENT_CACHE_SECONDS = 5.0
CLIENT_CACHE_ENTRIES = 1024


class ClientCache:
    """Used clients by id, each with the time it was read from Redis (see the module)."""

    def __init__(
        self,
        unused_client_ttl: float | None,
        max_age: float = CLIENT_CACHE_SECONDS,
        max_entries: int = CLIENT_CACHE_ENTRIES,
    ) -> None:
        self._unused_client_ttl = unused_client_ttl
        self._max_age = max_age
        self._max_entries = max_entries
        self._entries: dict[str, tuple[RegisteredClient, float]] = {}

    def _live(self, client_id: str, now: float) -> RegisteredClient | None:
        entry = self._entries.get(client_id)
        if entry is None:
            return None
        client, read_at = entry
        if now - read_at >= self._max_age or client_expiry(client, self._unused_client_ttl) <= now:
            del self._entries[client_id]
            return None
        return client

    def get(self, client_id: str, now: float) -> RegisteredClient | None:
        """A copy of the cached client, or None when not cached or too old."""
        client = self._live(client_id, now)
        return None if client is None else detached(client)

    def keep(self, client: RegisteredClient, now: float) -> None:
        """Remember ``client``, just read from Redis at ``now`` (if it has been used)."""
        if client.last_used_at is None:
            return
        self._entries.pop(client.client_id, None)
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[client.client_id] = (detached(client), now)

    def use_recorded_lately(self, client_id: str, now: float) -> bool:
        """Whether this process recorded (or read) a use of the client less than
        ``max_age`` ago: another write of the use can wait."""
        client = self._live(client_id, now)
        used = None if client is None else client.last_used_at
        return used is not None and now - used < self._max_age

    def record_use(self, client_id: str, now: float) -> None:
        """A use of the client was written at ``now``."""
        entry = self._entries.get(client_id)
        if entry is not None:
            client, read_at = entry
            self._entries[client_id] = (attrs.evolve(client, last_used_at=now), read_at)

    def forget(self, client_id: str) -> None:
        """The client is gone from Redis."""
        self._entries.pop(client_id, None)
