"""RedisLink: the storage's one connection to Redis, kept up, watched, and never waited on.

txredisapi queues a command until a connection exists; against a Redis that is down that is
forever. The link refuses instead: while no connection is up every command fails at once
with :class:`~authproxy.storage.unavailable.StorageUnavailable`, and so does a command whose
connection is lost, whose reply does not arrive within ``reply_timeout`` (txredisapi then
aborts the connection, so a hung Redis is reconnected too), or that Redis refuses for now
(``LOADING`` after a restart, ``READONLY`` from a demoted master after a failover...).
``READONLY`` also drops the connection, so the reconnect finds the new master.

Connecting never blocks startup: the daemon starts, ``/ready`` names storage until the
first connection is up, and txredisapi reconnects with backoff (at most ``max_delay``
seconds apart) whenever it is lost. A ``PING`` every ``ping_interval`` seconds notices a
connection that went quiet while idle; ``/ready`` reads the state, it never asks Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from authproxy.storage.redis.protocol import storage_protocol
from authproxy.storage.unavailable import StorageUnavailable

# Error replies that mean "not now" rather than "wrong command": answered as unavailable.
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "NOAUTH")


def unavailable(failure: Failure) -> Failure:
    """``failure`` as StorageUnavailable when it means Redis cannot answer now."""
    from txredisapi import ConnectionError, ResponseError, TimeoutError

    if failure.check(TimeoutError):
        return Failure(StorageUnavailable("Redis did not answer in time"))
    if failure.check(ConnectionError):
        return Failure(StorageUnavailable("the connection to Redis was lost"))
    if failure.check(ResponseError) and str(failure.value).startswith(_TRANSIENT_REPLIES):
        word = str(failure.value).split(" ", 1)[0]
        return Failure(StorageUnavailable(f"Redis refused the command for now ({word})"))
    return failure


class RedisCommands:
    """txredisapi's command methods (``get``, ``eval``...), each failing fast with
    StorageUnavailable while ``is_up()`` is false, and mapping connection errors to it.
    A ``READONLY`` reply also calls ``on_readonly`` (the node was demoted: reconnect).

    ``connection()``: the live connection, or None. A command goes straight to it: through
    txredisapi's handler every command first waited (an ``inlineCallbacks`` generator and
    three more Deferreds) for a connection from a pool of one, about a third of the Python
    time a refresh grant spent on Redis (benchmarks/README.md, P3). Commands that hold a
    connection (``MULTI``, ``WATCH``) still go through the handler.
    """

    def __init__(
        self,
        handler: Any,
        is_up: Callable[[], bool],
        on_readonly: Callable[[], object] = lambda: None,
        connection: Callable[[], Any] = lambda: None,
    ) -> None:
        self._handler = handler
        self._is_up = is_up
        self._on_readonly = on_readonly
        self._connection = connection

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        method = getattr(self._handler, name)

        def command(*args: Any, **kwargs: Any) -> Deferred[Any]:
            if not self._is_up():
                return fail(StorageUnavailable("Redis is unreachable"))
            connection = self._connection()
            direct = getattr(connection, name, None)
            d: Deferred[Any]
            if direct is None or getattr(direct, "_blocking", False):
                d = method(*args, **kwargs)
            else:
                try:
                    d = direct(*args, **kwargs)
                except Exception:
                    d = fail()
            return d.addErrback(self._failed)

        command.__name__ = name
        setattr(self, name, command)  # built once per command name, not per call
        return command

    def _failed(self, failure: Failure) -> Failure:
        from txredisapi import ResponseError

        if failure.check(ResponseError) and str(failure.value).startswith("READONLY"):
            self._on_readonly()
        return unavailable(failure)


def _persistent_factory() -> type:
    from txredisapi import RedisFactory

    class PersistentRedisFactory(RedisFactory):  # type: ignore[misc]
        """Never gives up reconnecting on its own; its connections parse replies at once
        (:mod:`~authproxy.storage.redis.protocol`).

        txredisapi stops for good when AUTH or SELECT fails on a new connection, and a hung
        Redis makes them time out: the link would then stay down after Redis recovered.
        Here the failed connection is dropped and retried with backoff (a wrong password
        too: /ready says storage is down and the log says why); only ``disconnect`` stops.
        """

        protocol = storage_protocol()

        def stopTrying(self) -> Deferred[None]:
            return succeed(None)

        def connectionError(self, why: str) -> None:
            RedisLink.log.warn("Storage: {why}", why=why)

    return PersistentRedisFactory


class RedisLink(MultiService):
    """The connection (a txredisapi factory through ``endpoint``) as an application service.

    ``commands`` is what the storage concerns talk to; ``readiness`` is the ``/ready``
    check. ``password`` is handed to Redis only (never logged).
    """

    log = Logger()

    def __init__(
        self,
        endpoint: Any,
        clock: Any,
        *,
        dbid: int = 0,
        password: str | None = None,
        reply_timeout: float = 3.0,
        ping_interval: float = 5.0,
        max_delay: float = 5.0,
        describe: str = "Redis",
    ) -> None:
        from txredisapi import ConnectionHandler

        super().__init__()
        self.endpoint = endpoint
        self.describe = describe  # where, for log lines and /ready (no credentials)
        self.factory = _persistent_factory()(
            describe,
            dbid,
            1,
            isLazy=True,
            handler=ConnectionHandler,
            password=password,
            replyTimeout=reply_timeout,
            convertNumbers=False,
        )
        self.factory.maxDelay = max_delay
        self.commands = RedisCommands(
            self.factory.handler, self.is_up, self._demoted, self._connection
        )
        self._was_up = False
        ping = TimerService(ping_interval, self._ping)
        ping.clock = clock
        ping.setServiceParent(self)

    def is_up(self) -> bool:
        """Whether a connection to Redis is established (and authenticated)."""
        return self.factory.size > 0

    def _connection(self) -> Any:
        """The pool's one live connection, or None."""
        pool = self.factory.pool
        if pool and pool[0].connected:
            return pool[0]
        return None

    def readiness(self) -> tuple[bool, str]:
        """The ``/ready`` check: up or not, and where."""
        if self.is_up():
            return True, f"connected to {self.describe}"
        return False, f"not connected to {self.describe}"

    def startService(self) -> None:
        self.factory.startConnecting(self.endpoint)
        super().startService()

    def stopService(self) -> Deferred[Any]:
        d: Deferred[Any] = super().stopService() or succeed(None)
        return d.addCallback(lambda _: self.factory.disconnect())

    def _demoted(self) -> None:
        """A write met a replica: the master moved (a failover). Reconnecting finds the new
        one (through Sentinel, or a name that now resolves to it)."""
        for connection in list(self.factory.pool):
            if not connection.transport.disconnecting:  # once, not per refused command
                self.log.warn(
                    "Storage: {where} is read-only now: reconnecting", where=self.describe
                )
                connection.transport.loseConnection()

    def _ping(self) -> Deferred[Any]:
        d = self.commands.ping()
        d.addCallbacks(lambda _: self._state(True), lambda f: self._state(False, f.value))
        return d

    def _state(self, up: bool, why: object = None) -> None:
        if up and not self._was_up:
            self.log.info("Storage: connected to {where}", where=self.describe)
        elif not up and self._was_up:
            self.log.warn("Storage: lost {where} ({why})", where=self.describe, why=why)
        self._was_up = up
