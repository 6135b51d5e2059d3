"""One request to the IdP at a time for the same thing; everyone who asks meanwhile shares it.

Refreshing a token session and refetching the IdP's JWKS both happen when many requests
notice the same need at once (an access token expired, an id_token names an unknown kid).
Sending one request per caller would spend the IdP's rate limits, and a refresh token used
twice may end the whole session at an IdP that rotates them.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs at most one ``fetch`` per key; callers arriving while it runs get its result.

    Each caller gets a Deferred of its own, so one caller cancelling its wait cancels neither
    the fetch nor the others' waits. A failure reaches every waiter; the next call after the
    fetch ended, however it ended, starts a new one.
    """

    def __init__(self) -> None:
        self._waiting: dict[Hashable, list[Deferred[T]]] = {}

    def run(self, fetch: Callable[[], Coroutine[Any, Any, T]], key: Hashable = None) -> Deferred[T]:
        """The result of the fetch in flight for ``key``, calling ``fetch()`` if there is none."""
        waiter: Deferred[T] = Deferred()
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.append(waiter)
            return waiter
        self._waiting[key] = [waiter]
        ensureDeferred(fetch()).addBoth(self._deliver, key)
        return waiter

    def _deliver(self, result: T | Failure, key: Hashable) -> None:
        for waiter in self._waiting.pop(key, []):
            if waiter.called:
                continue  # its caller cancelled the wait
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
