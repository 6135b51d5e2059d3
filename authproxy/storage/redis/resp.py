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


# Arrays within arrays: ROLE's reply nests three deep; deeper is a hostile or broken peer.
_MAX_DEPTH = 8


def parse_reply(data: bytes, start: int = 0) -> tuple[Any, int]:
    """The reply at ``data[start:]`` and where it ends: str (simple string), RespError, int,
    bytes or None (bulk string), list or None (array). Incomplete if ``data`` stops short;
    ValueError if it is not RESP."""
    reader = ReplyReader()
    replies = reader.feed(data[start:], limit=1)
    if not replies:
        raise Incomplete()
    return replies[0], len(data) - len(reader.rest())


class ReplyReader:
    """Reads replies from a stream as its chunks arrive, keeping its place: each byte is
    looked at once, however the peer splits its replies (re-parsing the buffer per chunk
    would be quadratic). ValueError for anything that is not RESP, arrays nested deeper than
    ``_MAX_DEPTH``, or ``_MAX_BUFFER`` bytes without a whole reply."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # the start of the next element not yet read
        self._scanned = 0  # where to look for the next line end: before it, there is none
        self._open: list[tuple[int, list[Any]]] = []  # arrays begun: (length, items so far)
        self._reply_bytes = 0  # read so far of the reply not yet whole

    def feed(self, data: bytes, limit: int | None = None) -> list[Any]:
        """The replies ``data`` completes (at most ``limit``; the rest stays unread)."""
        self._buffer += data
        replies: list[Any] = []
        whole_at = None  # where the last reply completed in this buffer
        while limit is None or len(replies) < limit:
            element = self._element()
            if element is _MORE:
                break
            while self._open:  # a complete element fills its array, maybe several
                length, items = self._open[-1]
                items.append(element)
                if len(items) < length:
                    break
                self._open.pop()
                element = items
            else:
                replies.append(element)
                whole_at = self._pos
        if whole_at is None:
            self._reply_bytes += self._pos
        else:
            self._reply_bytes = self._pos - whole_at
        del self._buffer[: self._pos]  # cheap: bytearray drops its head without copying
        self._scanned -= self._pos
        self._pos = 0
        if self._reply_bytes + len(self._buffer) > _MAX_BUFFER:
            raise ValueError("no complete RESP reply in 1 MiB")
        return replies

    def rest(self) -> bytes:
        """What was received after the replies read."""
        return bytes(self._buffer[self._pos :])

    def _element(self) -> Any:
        """The next scalar or empty array, opening any array it starts; _MORE if it is not
        all here."""
        while True:
            end = self._buffer.find(b"\r\n", max(self._pos, self._scanned))
            if end < 0:
                self._scanned = max(self._pos, len(self._buffer) - 1)
                return _MORE
            kind = self._buffer[self._pos : self._pos + 1]
            line = bytes(self._buffer[self._pos + 1 : end])
            after = end + 2
            if kind in (b"+", b"-"):
                self._pos = self._scanned = after
                text = line.decode(errors="replace")
                return text if kind == b"+" else RespError(text)
            if kind not in (b":", b"$", b"*"):
                raise ValueError(f"not a RESP reply (starts with {bytes(kind)!r})")
            try:
                number = int(line)
            except ValueError:
                raise ValueError(f"not a RESP length or integer: {line[:20]!r}") from None
            if kind == b"$" and number >= 0:
                if number > _MAX_BUFFER:
                    raise ValueError(f"a RESP string of {number} bytes is too long")
                if len(self._buffer) < after + number + 2:
                    return _MORE  # the header is read again with the rest: one short line
                self._pos = self._scanned = after + number + 2
                return bytes(self._buffer[after : after + number])
            self._pos = self._scanned = after
            if kind == b":":
                return number
            if number <= 0:
                return None if number < 0 else []
            if len(self._open) >= _MAX_DEPTH:
                raise ValueError(f"RESP arrays nested deeper than {_MAX_DEPTH}")
            self._open.append((number, []))


_MORE = object()


class RespExchange(Protocol):
    """Sends ``commands`` once connected; ``replies`` fires with their replies (error
    replies as :class:`RespError` values). Then the caller closes the connection, or hands
    it over (:meth:`hand_over`) to the protocol it was made for.

    Cancelling ``replies`` aborts the connection; losing it first fails ``replies``.
    """

    def __init__(self, commands: Sequence[bytes]) -> None:
        self.commands = commands
        self.replies: Deferred[list[Any]] = Deferred(self._abort)
        self._reader = ReplyReader()
        self._received: list[Any] = []
        self._inner: IProtocol | None = None

    def connectionMade(self) -> None:
        self.transport.write(b"".join(self.commands))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        if self.replies.called:
            return  # being closed
        try:
            want = len(self.commands) - len(self._received)
            self._received.extend(self._reader.feed(data, limit=want))
        except ValueError as e:
            self._fail(e)
            return
        if len(self._received) == len(self.commands):
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
        rest = self._reader.rest()
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
