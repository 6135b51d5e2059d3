"""RESP, Redis's wire protocol: just enough to ask a Sentinel, and to check a node's ``ROLE``
before its connection is handed to txredisapi (:class:`RespExchange`).

RESP2 only (what Redis speaks until a client says ``HELLO 3``): simple strings, errors,
integers, bulk strings and arrays, nested.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

# A Sentinel's or ROLE's reply is a few hundred bytes; more without a whole reply is garbage.
_MAX_BUFFER = 1 << 20


class RespError(Exception):
    """An error reply (``-ERR ...``): the value in a reply list, not raised by parsing."""


class Incomplete(Exception):
    """The buffer ends before the reply does."""


def command(*words: str | bytes) -> bytes:
    """One command as RESP (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode() if isinstance(word, str) else word
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_reply(data: bytes, start: int = 0) -> tuple[Any, int]:
    """The reply at ``data[start:]`` and where it ends: str (simple string), RespError, int,
    bytes or None (bulk string), list or None (array). Incomplete if ``data`` stops short;
    ValueError if it is not RESP."""
    end = data.find(b"\r\n", start)
    if end < 0:
        raise Incomplete()
    kind, line, after = data[start : start + 1], data[start + 1 : end], end + 2
    if kind == b"+":
        return line.decode(errors="replace"), after
    if kind == b"-":
        return RespError(line.decode(errors="replace")), after
    if kind not in (b":", b"$", b"*"):
        raise ValueError(f"not a RESP reply (starts with {kind!r})")
    try:
        number = int(line)
    except ValueError:
        raise ValueError(f"not a RESP length or integer: {line[:20]!r}") from None
    if kind == b":":
        return number, after
    if number < 0:
        return None, after
    if kind == b"$":
        if len(data) < after + number + 2:
            raise Incomplete()
        return data[after : after + number], after + number + 2
    items = []
    for _ in range(number):
        item, after = parse_reply(data, after)
        items.append(item)
    return items, after


class RespExchange(Protocol):
    """Sends ``commands`` once connected; ``replies`` fires with their replies (error
    replies as :class:`RespError` values). Then the caller closes the connection, or hands
    it over (:meth:`hand_over`) to the protocol it was made for.

    Cancelling ``replies`` aborts the connection; losing it first fails ``replies``.
    """

    def __init__(self, commands: Sequence[bytes]) -> None:
        self.commands = commands
        self.replies: Deferred[list[Any]] = Deferred(self._abort)
        self._received: list[Any] = []
        self._buffer = b""
        self._inner: IProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(b"".join(self.commands))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self.replies.called:
            return  # being closed
        self._buffer += data
        try:
            while len(self._received) < len(self.commands):
                reply, end = parse_reply(self._buffer)
                self._received.append(reply)
                self._buffer = self._buffer[end:]
        except Incomplete:
            if len(self._buffer) > _MAX_BUFFER:
                self._fail(ValueError("no complete RESP reply in 1 MiB"))
            return
        except ValueError as e:
            self._fail(e)
            return
        self.replies.callback(self._received)

    def hand_over(self, factory: IProtocolFactory) -> IProtocol | None:
        """The connection, from now on, belongs to a protocol of ``factory`` (None, and the
        connection closed, if the factory refuses)."""
        transport: Any = self.transport
        inner = factory.buildProtocol(transport.getPeer())
        if inner is None:
            transport.loseConnection()
            return None
        self._inner = inner
        inner.makeConnection(transport)
        rest, self._buffer = self._buffer, b""
        if rest:
            inner.dataReceived(rest)
        return inner

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)
        elif not self.replies.called:
            self.replies.errback(reason)

    def _fail(self, error: Exception) -> None:
        self.transport.abortConnection()  # type: ignore[union-attr]
        self.replies.errback(error)

    def _abort(self, _: object) -> None:
        if self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class RespExchangeFactory(Factory):
    """Builds one :class:`RespExchange` of ``commands`` per connection."""

    def __init__(self, commands: Sequence[bytes]) -> None:
        self.commands = commands

    def buildProtocol(self, addr: Any) -> RespExchange:
        return RespExchange(self.commands)
