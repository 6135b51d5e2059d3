"""StorageCaps, the bounds of every storage collection, and StorageFull, what every storage
concern raises when a cap leaves no room."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class StorageCaps:
    """How much each storage may hold; the defaults of every storage type.

    ``max_<name>`` bounds the collection ``<name>``. ``unused_client_ttl`` None keeps clients
    forever. ``max_rate_keys`` bounds the rate buckets of every limiter together (four
    limiters of 10000 keys each).
    """

    max_clients: int = 10000
    unused_client_ttl: float | None = 30 * 86400
    max_pending: int = 10000
    max_codes: int = 10000
    max_refresh_tokens: int = 100000
    max_families: int = 100000
    max_upstream_sessions: int = 100000
    max_users: int = 100000
    max_revoked_jtis: int = 100000
    revoked_jti_leeway: float = 60.0
    max_rate_keys: int = 40000

    def collection_caps(self) -> dict[str, int]:
        """The cap of each record collection by its name (rate buckets are not records)."""
        return {
            field.name.removeprefix("max_"): getattr(self, field.name)
            for field in attrs.fields(StorageCaps)
            if field.name.startswith("max_") and field.name != "max_rate_keys"
        }


class StorageFull(Exception):
    """A collection reached its configured cap and nothing could be evicted.

    ``collection`` names it (a metric label); ``retry_after`` is a hint in seconds for the
    client (when entries expire), or None.
    """

    def __init__(self, message: str, collection: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.collection = collection
        self.retry_after = retry_after
