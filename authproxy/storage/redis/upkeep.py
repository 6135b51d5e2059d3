"""RedisUpkeep: sweeps and figures for a Redis storage as a whole."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred

from authproxy.storage.redis.owned import OwnedCollection


class RedisUpkeep:
    """Redis expires records itself (their TTL); the sweep drops the expired ids from the
    collections' indexes (a bounded number per collection and run) and refreshes the counts
    that metrics read synchronously."""

    def __init__(self, collections: list[OwnedCollection], refusals: dict[str, int]) -> None:
        self._collections = collections
        self._refusals = refusals
        self._counts = {collection.name: 0 for collection in collections}

    def sweep(self) -> Deferred[int]:
        """Remove expired ids from every index; fires with how many were removed."""

        def swept(results: list[tuple[int, int]]) -> int:
            for collection, (_, left) in zip(self._collections, results, strict=True):
                self._counts[collection.name] = left
            return sum(removed for removed, _ in results)

        sweeps = [collection.sweep() for collection in self._collections]
        return defer.gatherResults(sweeps, consumeErrors=True).addCallback(swept)

    def record_counts(self) -> dict[str, int]:
        """How many records each collection held at the last sweep."""
        return dict(self._counts)

    def refusals(self) -> dict[str, int]:
        """How many requests each collection refused at its cap since start (this replica)."""
        return dict(self._refusals)
