"""How many of something each key holds, and all keys together: the counting behind every
"at most N in total and M per key" cap (connections per source, backend connections per
grant)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class HeldCounts(Generic[K]):
    """``take`` when a key acquires one, ``give_back`` when it lets it go; a key holding
    nothing is forgotten, so memory follows what is held, not who ever held something."""

    def __init__(self) -> None:
        self.total = 0
        self._held: dict[K, int] = {}

    def held(self, key: K) -> int:
        return self._held.get(key, 0)

    def take(self, key: K | None) -> None:
        """One more held by ``key`` (None: counted in the total only)."""
        self.total += 1
        if key is not None:
            self._held[key] = self._held.get(key, 0) + 1

    def give_back(self, key: K | None) -> None:
        self.total -= 1
        if key is not None:
            held = self._held.pop(key, 1) - 1
            if held > 0:
                self._held[key] = held
