"""One total deadline for an outgoing request (IdP calls, client metadata documents).

Not ``Deferred.addTimeout``: twisted.web's Agent turns the cancellation into
``ResponseNeverReceived``, so the caller could not tell a timeout from a lost connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

T = TypeVar("T")


def within_deadline(
    d: Deferred[T], clock: IReactorTime, timeout: float, outcome: Callable[[Any, bool], Any]
) -> Deferred[Any]:
    """``d``, cancelled after ``timeout`` seconds; its result or Failure goes through
    ``outcome(result, timed_out)``, which says what the caller sees."""
    timed_out = False

    def expire() -> None:
        nonlocal timed_out
        timed_out = True
        d.cancel()

    call = clock.callLater(timeout, expire)

    def settle(result: Any) -> Any:
        if call.active():
            call.cancel()
        return outcome(result, timed_out)

    return d.addBoth(settle)
