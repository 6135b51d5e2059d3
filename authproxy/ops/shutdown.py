"""Graceful shutdown: what SIGTERM does, and in which order.

twistd stops the reactor on SIGTERM, and the reactor waits for the Deferred of the
application's ``stopService`` before it shuts down. authproxy's top service
(``GracefulService``) stops its parts in this order:

1. ``/ready`` answers 503 ("shutting down") and the listeners stop accepting (a new
   connection is refused), both at once. Not readiness first with a pause: Kubernetes takes
   a terminating pod out of its Service's endpoints when the pod is deleted, in parallel with
   the preStop hook, whose sleep gives the load balancers time to notice; by the time SIGTERM
   arrives no new traffic should come. A connection opened before (kept alive, or a stream's)
   still reaches ``/ready`` and sees the 503.
2. Requests in flight finish; kept-alive connections are closed as soon as they are idle,
   so no new request starts on them.
3. Open event streams (legacy SSE, and streamable HTTP's GET and POST streams) run on for
   up to ``server.shutdown_grace``, then each is ended cleanly: the last chunk, then the
   connection closed (``BodyRelay.end_stream``). An MCP client treats a cleanly ended stream
   as "reconnect": the SDK's GET stream reopens at once with ``Last-Event-ID`` (an aborted
   one counts as a failure, and two failures end its retries), a POST stream that ended
   before its response is resumed with ``Last-Event-ID`` if it carried event ids. A stream
   that ends by itself earlier lets shutdown go on earlier.
4. The application's services stop (key watcher, storage, backend connection pool,
   upstream), and the supervised backend last: streams were relayed from it to the end.

Everything is polled on the reactor's clock every ``tick`` seconds: shutdown happens once,
so the request path pays nothing for it (the Site keeps its open connections in a set,
per connection, which is all this reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

log = Logger()


class Drain:
    """Waits for a Site's requests and streams to finish, ending streams after ``grace``.

    ``channels`` is the Site's set of open connections; ``end_streams`` ends every open
    event stream cleanly and says how many there were.
    """

    def __init__(
        self,
        clock: Any,
        channels: set[Any],
        end_streams: Callable[[], int],
        grace: float,
        tick: float = 0.05,
        linger: float = 2.0,
    ) -> None:
        self._clock = clock
        self._channels = channels
        self._end_streams = end_streams
        self.grace = grace
        self._tick = tick
        # after the grace: how long ended streams get to flush their last bytes
        self._linger = linger
        self.draining = False

    def readiness(self) -> tuple[bool, str]:
        """The ``shutdown`` readiness check: not ready once draining began."""
        return (False, "shutting down") if self.draining else (True, "running")

    def begin(self) -> None:
        """Turn readiness off (the listeners are stopped by the caller)."""
        self.draining = True

    def busy(self) -> int:
        """Connections with a request in flight (streams included)."""
        return sum(1 for channel in self._channels if channel.requests)

    def _close_idle(self) -> None:
        for channel in list(self._channels):
            if not channel.requests:
                channel.loseConnection()

    async def _settle(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for every request to finish; True when they did."""
        deadline = self._clock.seconds() + seconds
        while True:
            self._close_idle()
            if not self.busy():
                return True
            if self._clock.seconds() >= deadline:
                return False
            await deferLater(self._clock, self._tick, lambda: None)

    async def wait(self) -> None:
        """Return once nothing is in flight: at once, early, or after the grace."""
        busy = self.busy()
        log.info(
            "Shutting down: not ready, not accepting; {busy} connections busy "
            "(streams get up to {grace}s)",
            busy=busy,
            grace=self.grace,
        )
        if await self._settle(self.grace):
            log.info("Shutting down: every request finished")
            return
        ended = self._end_streams()
        if await self._settle(self._linger):
            log.info("Shutting down: grace over, {ended} streams ended cleanly", ended=ended)
            return
        log.warn(
            "Shutting down: grace over, {ended} streams ended cleanly, "
            "{busy} requests still unfinished are cut",
            ended=ended,
            busy=self.busy(),
        )


async def _stop_all(services: Iterable[IService]) -> None:
    # One failing service must not keep the others (or the backend) running.
    results = await DeferredList(
        [maybeDeferred(s.stopService) for s in services if s.running], consumeErrors=True
    )
    for ok, result in results:
        if not ok:
            log.failure("A service failed to stop", result)


class GracefulService(MultiService):
    """A MultiService that stops as a graceful shutdown does (see the module docstring).

    Children in ``listeners`` stop first, then ``drain`` waits, then the other children
    (in reverse order, together), then those in ``last``.
    """

    def __init__(self, drain: Drain | None = None) -> None:
        super().__init__()
        self.drain = drain
        self.listeners: list[IService] = []
        self.last: list[IService] = []

    def stopService(self) -> Any:
        Service.stopService(self)
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.drain is not None:
            self.drain.begin()
        await _stop_all(self.listeners)
        if self.drain is not None:
            try:
                await self.drain.wait()
            except Exception:  # the services below (the backend) must still stop
                log.failure("Draining connections failed")
        ordered = set(self.listeners) | set(self.last)
        await _stop_all([s for s in reversed(list(self)) if s not in ordered])
        await _stop_all(self.last)
