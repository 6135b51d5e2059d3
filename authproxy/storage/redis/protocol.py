"""The txredisapi protocols as the storage uses them: replies parsed as they arrive, no Nagle.

txredisapi's reply parser (its own ``LineReceiver``) pauses the transport after every bulk
string and parses the rest of the read only on the reactor's next turn (``callLater(0)``),
which resumes the transport again: two ``epoll_ctl`` calls and a whole reactor iteration per
bulk string. A reply to ``HMGET`` of three fields took four reactor turns, each behind every
other ready socket, and a refresh grant makes a dozen such round trips. Measured with P3 on
Redis (benchmarks/README.md): that wait, not Redis, set the grants/s. :class:`InlineReplies`
parses the rest of a read at once, in a loop (no recursion however many replies a read
holds).

With ``hiredis`` installed (a dependency) txredisapi's ``RedisProtocol`` is its C-parsing
``HiredisProtocol``, which needs no such fix; the mixin then only passes reads through.

Nagle's algorithm is off on the connection (``TCP_NODELAY``, which Twisted does not set): a
command written while an earlier one is unacknowledged must not wait for Redis's ACK.
"""

from __future__ import annotations

from typing import Any


def no_delay(transport: Any) -> bool:
    """Turn Nagle's algorithm off on a TCP (or TLS over TCP) connection; whether it was one
    (a unix socket has no Nagle to turn off)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is None:
        return False
    try:
        set_no_delay(True)
    except OSError:  # not a TCP socket (a unix socket under a TLS wrapper, say)
        return False
    return True


class InlineReplies:
    """Mixin for a txredisapi protocol: the rest of a read after a bulk string is parsed at
    once instead of a reactor turn later; ``TCP_NODELAY`` on connect."""

    _rest = b""

    def connectionMade(self) -> Any:
        no_delay(self.transport)  # type: ignore[attr-defined]
        return super().connectionMade()  # type: ignore[misc]

    def setLineMode(self, extra: bytes | str = b"") -> None:
        # txredisapi calls this at the end of a bulk string with the rest of the read: keep
        # it for dataReceived's loop below rather than pausing until the next reactor turn.
        self.line_mode = 1
        if extra:
            self._rest = extra if isinstance(extra, bytes) else extra.encode()

    def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
        while True:
            self._rest = b""
            why = super().dataReceived(data)  # type: ignore[misc]
            if why or not self._rest:
                return why
            data = self._rest


def _encoded(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()  # txredisapi's default charset, utf-8, strict
    if isinstance(arg, float):
        return format(arg, "f").encode()  # as txredisapi encodes a float
    return str(arg).encode()


class LeanCommands:
    """Mixin for a txredisapi protocol: a plain command costs fewer Python steps.

    Per command txredisapi encodes every argument twice over (value and length, through a
    chain of type checks) and chains three Deferreds (the reply queue's, a result it fires,
    the timeout's). A refresh grant sends a dozen commands, scripts with twenty arguments,
    and this was a third of its Python time on Redis (benchmarks/README.md, P3). Here the
    command is built in one join, and the reply queue's Deferred is the result: a reply
    timeout still fails it (txredisapi puts the TimeoutError into the queue for every
    waiter) and a lost connection too. Pipelining, ``MULTI`` and ``post_proc`` take
    txredisapi's own path.
    """

    def _build_command(self, *args: Any, **kwargs: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            value = _encoded(arg)
            parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
        return b"".join(parts)

    def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs or self.pipelining or self.inMulti or not self.connected:  # type: ignore[attr-defined]
            return super().execute_command(*args, **kwargs)  # type: ignore[misc]
        self.transport.write(self._build_command(*args))  # type: ignore[attr-defined]
        reply = self.replyQueue.get().addCallback(self.handle_reply)  # type: ignore[attr-defined]
        if self.replyTimeout:  # type: ignore[attr-defined]
            timeout = self.callLater(self.replyTimeout, self._reply_late)  # type: ignore[attr-defined]
            reply.addBoth(_cancelled, timeout)
        return reply

    def _reply_late(self) -> None:
        # txredisapi's fire_timeout, less its own result Deferred: every waiter fails.
        from txredisapi import TimeoutError

        error = TimeoutError(f"Not received Redis response in {self.replyTimeout} seconds")  # type: ignore[attr-defined]
        while self.replyQueue.waiting:  # type: ignore[attr-defined]
            self.replyQueue.put(error)  # type: ignore[attr-defined]
        self.transport.abortConnection()  # type: ignore[attr-defined]


def _cancelled(result: Any, timeout: Any) -> Any:
    if timeout.active():
        timeout.cancel()
    return result


def storage_protocol() -> type:
    """txredisapi's RedisProtocol with :class:`InlineReplies` and :class:`LeanCommands`
    (imported on first use)."""
    from txredisapi import RedisProtocol

    class StorageRedisProtocol(LeanCommands, InlineReplies, RedisProtocol):  # type: ignore[misc]
        """The storage's connection protocol."""

    return StorageRedisProtocol
