"""StorageFull: what every storage concern raises when a cap leaves no room."""

from __future__ import annotations


class StorageFull(Exception):
    """A collection reached its configured cap and nothing could be evicted.

    ``collection`` names it (a metric label); ``retry_after`` is a hint in seconds for the
    client (when entries expire), or None.
    """

    def __init__(self, message: str, collection: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.collection = collection
        self.retry_after = retry_after
