"""OwnerIndex: who owns which stored keys, so that a flood at a cap costs the flooder first.

Records created by unauthenticated requests (pending authorizations, registered clients) are
owned by their source address (see ``source_key``); refresh tokens and token families by
their client. At a cap, the key to evict is the oldest of the owner holding the most keys,
and the newcomer's own oldest whenever it holds at least as many as anyone: one source
filling a table only ever replaces its own entries.
"""

from __future__ import annotations

from collections import OrderedDict


class OwnerIndex:
    """Keys per owner in insertion order, and owners bucketed by count: O(1) per operation."""

    def __init__(self) -> None:
        self._owner_of: dict[str, str] = {}
        self._keys: dict[str, OrderedDict[str, None]] = {}  # owner -> its keys, oldest first
        self._by_count: dict[int, dict[str, None]] = {}  # count -> owners holding that many
        self._max = 0

    def __len__(self) -> int:
        return len(self._owner_of)

    def __contains__(self, key: object) -> bool:
        return key in self._owner_of

    def count(self, owner: str) -> int:
        keys = self._keys.get(owner)
        return 0 if keys is None else len(keys)

    @property
    def most(self) -> int:
        """How many keys the largest owner holds."""
        return self._max

    def add(self, key: str, owner: str) -> None:
        """Index ``key`` as ``owner``'s newest (moving it from a previous owner)."""
        if key in self._owner_of:
            self.discard(key)
        self._owner_of[key] = owner
        keys = self._keys.setdefault(owner, OrderedDict())
        keys[key] = None
        self._recount(owner, len(keys) - 1, len(keys))

    def discard(self, key: str) -> None:
        owner = self._owner_of.pop(key, None)
        if owner is None:
            return
        keys = self._keys[owner]
        del keys[key]
        if not keys:
            del self._keys[owner]
        self._recount(owner, len(keys) + 1, len(keys))

    def oldest(self, owner: str) -> str | None:
        keys = self._keys.get(owner)
        return None if not keys else next(iter(keys))

    def victim(self, owner: str) -> tuple[str, str] | None:
        """(key, its owner) to evict so that ``owner`` can add one, or None when empty.

        ``owner``'s own oldest key when it holds at least as many as any other owner, else the
        oldest key of an owner holding the most.
        """
        if not self._owner_of:
            return None
        if self.count(owner) < self._max:
            owner = next(iter(self._by_count[self._max]))
        key = self.oldest(owner)
        return None if key is None else (key, owner)

    def _recount(self, owner: str, old: int, new: int) -> None:
        if old:
            bucket = self._by_count[old]
            del bucket[owner]
            if not bucket:
                del self._by_count[old]
                if old == self._max and new < old:
                    self._max = new  # the owner itself now holds new (or nobody is left)
        if new:
            self._by_count.setdefault(new, {})[owner] = None
            self._max = max(self._max, new)
