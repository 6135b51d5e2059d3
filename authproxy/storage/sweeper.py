"""StorageSweeper: a service that periodically removes expired records from a storage."""

from __future__ import annotations

from typing import Protocol

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from authproxy.storage.unavailable import StorageUnavailable


class Sweepable(Protocol):
    """A storage whose expired records must be removed by a periodic sweep (memory)."""

    def sweep(self) -> Deferred[int]:
        """Remove expired records; fires with how many were removed."""


class StorageSweeper(TimerService):
    """Calls ``storage.sweep()`` every ``interval`` seconds of the injected clock.

    A failing sweep is logged and the loop goes on: one bad sweep must not stop expiry.
    """

    log = Logger()

    def __init__(self, storage: Sweepable, clock: IReactorTime, interval: float = 60.0) -> None:
        super().__init__(interval, self._sweep)
        self.clock = clock
        self._storage = storage

    def _sweep(self) -> Deferred[None]:
        d: Deferred[int] = maybeDeferred(self._storage.sweep)
        return d.addCallbacks(self._swept, self._failed_sweep)

    def _swept(self, removed: int) -> None:
        if removed:
            self.log.debug("Storage sweep removed {removed} expired records", removed=removed)

    def _failed_sweep(self, failure: Failure) -> None:
        if failure.check(StorageUnavailable):  # /ready says so already: no traceback
            self.log.warn("Storage sweep skipped: {why}", why=failure.value)
            return
        self.log.failure("Storage sweep failed", failure)
