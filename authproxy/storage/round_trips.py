"""together(): independent storage steps sent at once, their outcomes taken in order.

On Redis every awaited step is a round trip's wait; steps that do not depend on each other
are started together so the grant waits once. A refusal keeps its precedence: when several
fail, the first in argument order is raised, as if they had run one after the other.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, cast

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.python.failure import Failure


async def together(*steps: Deferred[Any] | Coroutine[Any, Any, Any]) -> list[Any]:
    """Start every step (coroutines or Deferreds) now; their results, or the first failure."""
    started: list[Deferred[Any]] = [ensureDeferred(step) for step in steps]
    results = await DeferredList(started, consumeErrors=True)
    for succeeded, result in results:
        if not succeeded:
            cast(Failure, result).raiseException()
    return [result for _, result in results]
