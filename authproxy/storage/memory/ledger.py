"""CapLedger: the caps of a memory storage's collections, and the evictions and refusals at them.

Every concern of a memory storage registers its collections here, so that a cap check can
first sweep the expired entries of that collection, the periodic sweep reaches them all, and
metrics read one count of records and refusals for the whole storage.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from typing import Any, cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from authproxy.storage.capacity import StorageFull
from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.memory.expiring import ExpiringMap

# Removes the expired entries of one collection (and what indexes them) at a time; how many.
Sweep = Callable[[float], int]


class CapLedger:
    """The collections of one memory storage: their caps, sweeps and counts.

    Live evictions and refusals are counted (:meth:`refusals` for metrics) and logged as a
    warning once per sweep period and collection, not per entry.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        # through Any: without the mypy-zope plugin, mypy misreads interface methods
        self.now: Callable[[], float] = cast(Any, clock).seconds
        self._caps: dict[str, int] = {}
        self._collections: dict[str, Sized] = {}
        self._sweeps: dict[str, Sweep] = {}
        # live entries evicted at a cap since the last sweep, per collection
        self._evictions: dict[str, int] = {}
        # requests refused at a full cap: since the last sweep, and in total (a metric)
        self._refused: dict[str, int] = {}
        self._refusals_total: dict[str, int] = {}

    def register(self, name: str, cap: int, collection: Sized, sweep: Sweep | None) -> None:
        """Add a collection; ``sweep`` removes its expired entries (None: nothing expires)."""
        if cap < 1:
            raise ValueError(f"max_{name} must be at least 1, not {cap}")
        self._caps[name] = cap
        self._collections[name] = collection
        if sweep is not None:
            self._sweeps[name] = sweep

    def cap(self, name: str) -> int:
        return self._caps[name]

    def count_eviction(self, collection: str) -> None:
        count = self._evictions.get(collection, 0) + 1
        self._evictions[collection] = count
        if count == 1:
            self.log.warn(
                "Storage collection {collection} reached its cap of {cap}: evicting live entries",
                collection=collection,
                cap=self._caps[collection],
            )

    def refuse(self, collection: str, store: ExpiringMap[str, Any] | None) -> StorageFull:
        """Count a refusal at a full cap; the StorageFull to raise (or fail with)."""
        self._refusals_total[collection] = self._refusals_total.get(collection, 0) + 1
        count = self._refused.get(collection, 0) + 1
        self._refused[collection] = count
        cap = self._caps[collection]
        if count == 1:
            self.log.warn(
                "Storage collection {collection} is full at its cap of {cap}: refusing",
                collection=collection,
                cap=cap,
            )
        retry_after = None
        soonest = None if store is None else store.soonest_expiry()
        if soonest is not None:
            retry_after = min(3600.0, max(1.0, soonest - self.now()))
        return StorageFull(f"{collection} cap of {cap} reached", collection, retry_after)

    def full(self, collection: str, store: ExpiringMap[str, Any], key: str) -> bool:
        """True when ``key`` is new and the collection is at its cap even without expired
        entries (which this removes)."""
        if key in store or len(store) < self._caps[collection]:
            return False
        now = self.now()
        soonest = store.soonest_expiry()
        if soonest is not None and soonest <= now:
            self._sweeps[collection](now)
        return len(store) >= self._caps[collection]

    def put_owned(
        self,
        collection: str,
        store: ExpiringMap[str, Any],
        owners: OwnerIndex,
        key: str,
        owner: str,
        value: Any,
        expires_at: float,
    ) -> None:
        """Store; at the cap, the oldest entry of the owner holding the most goes first (the
        newcomer's own whenever it holds as many as anyone)."""
        if self.full(collection, store, key):
            victim = owners.victim(owner)
            if victim is not None:
                store.pop(victim[0])
                owners.discard(victim[0])
                self.count_eviction(collection)
        store.set(key, value, expires_at)
        owners.add(key, owner)

    def sweep(self) -> Deferred[int]:
        """Remove every expired record; fires with how many were removed.

        Also reports (and resets) the count of live entries evicted at a cap since the
        last sweep.
        """
        now = self.now()
        removed = sum(sweep(now) for sweep in self._sweeps.values())
        for collection, count in sorted(self._evictions.items()):
            self.log.warn(
                "Evicted {count} live entries from {collection} at its cap of {cap}",
                count=count,
                collection=collection,
                cap=self._caps[collection],
            )
        for collection, count in sorted(self._refused.items()):
            self.log.warn(
                "Refused {count} requests: {collection} full at its cap of {cap}",
                count=count,
                collection=collection,
                cap=self._caps[collection],
            )
        self._evictions.clear()
        self._refused.clear()
        return succeed(removed)

    def record_counts(self) -> dict[str, int]:
        """How many records each collection holds (expired but unswept ones included)."""
        return {name: len(collection) for name, collection in self._collections.items()}

    def refusals(self) -> dict[str, int]:
        """How many requests each collection refused at its cap since start (a counter)."""
        return dict(self._refusals_total)


def sweep_owned(store: ExpiringMap[str, Any], owners: OwnerIndex) -> Sweep:
    """The sweep of a collection indexed by owner: expired keys leave the index too."""

    def sweep(now: float) -> int:
        gone = store.sweep(now)
        for key, _ in gone:
            owners.discard(key)
        return len(gone)

    return sweep
