"""IRateCounters: token buckets by key, so rate limits can be shared between processes."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface


class IRateCounters(Interface):
    """Token buckets holding up to ``capacity`` tokens, refilled at ``per_second``.

    A bucket never seen (or forgotten) starts full. Keys are namespaced by the caller.
    """

    def take(key: str, capacity: float, per_second: float) -> Deferred[float]:
        """Take one token from ``key``'s bucket: 0 when there was one, else the seconds until
        one is available (and nothing is taken)."""
