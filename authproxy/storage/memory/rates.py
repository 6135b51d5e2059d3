"""MemoryRateCounters: token buckets in process memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from authproxy.storage.rates import IRateCounters


@implementer(IRateCounters)
class MemoryRateCounters:
    """At most ``max_keys`` buckets (least recently used dropped first), so a flood of source
    addresses costs bounded memory; a dropped bucket starts full again, which only helps an
    attacker who already controls more addresses than the cap."""

    def __init__(self, clock: IReactorTime, max_keys: int = 10000) -> None:
        self._seconds: Callable[[], float] = cast(Any, clock).seconds
        self._max_keys = max_keys
        # key -> (tokens, last refill time)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take_now(self, key: str, capacity: float, per_second: float) -> float:
        """:meth:`take` without the Deferred, for callers that know they hold this class."""
        now = self._seconds()
        tokens, last = self._buckets.pop(key, (capacity, now))
        tokens = min(capacity, tokens + max(0.0, now - last) * per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / per_second
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def take(self, key: str, capacity: float, per_second: float) -> Deferred[float]:
        """Take one token from ``key``'s bucket: 0 when there was one, else the wait."""
        return defer.succeed(self.take_now(key, capacity, per_second))
