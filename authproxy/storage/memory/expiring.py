"""ExpiringMap, the dict-beside-a-heap every memory collection is, and detached record copies.

Records go in and come out as detached copies: a caller mutating a dict inside a record it
was handed cannot change what is stored.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import attrs
from attrs import AttrsInstance

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R", bound=AttrsInstance)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, sets of plain values).

    Records hold JSON-like metadata only; this is several times cheaper than
    ``copy.deepcopy``, which matters on the token endpoint's path.
    """
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    if isinstance(value, set):
        return set(value)
    return value


def detached(record: R) -> R:
    """A copy of a frozen attrs record whose mutable members (dicts, lists) are deep copies."""
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, dict | list | set):
            changes[field.alias or field.name] = copy_json(value)
    return attrs.evolve(record, **changes) if changes else record  # type: ignore[misc]


class ExpiringMap(Generic[K, V]):
    """A dict whose entries carry an expiry, with a lazily cleaned heap ordered by expiry.

    The heap may hold stale entries (replaced or deleted keys); each dict entry remembers the
    sequence number of its live heap entry, and the heap is rebuilt once stale entries
    outnumber live ones, so memory stays proportional to the live size.
    """

    def __init__(self) -> None:
        self._items: dict[K, tuple[V, float, int]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K, now: float) -> V | None:
        """The value, or None when absent or expired (expired entries wait for a sweep)."""
        entry = self._items.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def expires_at(self, key: K) -> float | None:
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def set(self, key: K, value: V, expires_at: float) -> None:
        seq = next(self._seq)
        self._items[key] = (value, expires_at, seq)
        heapq.heappush(self._heap, (expires_at, seq, key))
        self._maybe_compact()

    def replace_value(self, key: K, value: V) -> None:
        """Change the value and keep the expiry (and heap entry) of an existing key."""
        _, expires_at, seq = self._items[key]
        self._items[key] = (value, expires_at, seq)

    def pop(self, key: K) -> V | None:
        entry = self._items.pop(key, None)
        self._maybe_compact()
        return None if entry is None else entry[0]

    def sweep(self, now: float) -> list[tuple[K, V]]:
        """Remove every expired entry; returns them."""
        removed: list[tuple[K, V]] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._items.get(key)
            if entry is not None and entry[2] == seq:
                del self._items[key]
                removed.append((key, entry[0]))
        self._maybe_compact()
        return removed

    def soonest_expiry(self) -> float | None:
        """When the first entry expires (a stale heap entry may answer a little early)."""
        return self._heap[0][0] if self._heap else None

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._items) + 64:
            self._heap = [(exp, seq, key) for key, (_, exp, seq) in self._items.items()]
            heapq.heapify(self._heap)
