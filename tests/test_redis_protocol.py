"""The storage's txredisapi protocol: every reply in a read is parsed at once; TCP_NODELAY.

In memory (StringTransport, no reactor): txredisapi's own parser would deliver only the
first reply of a read before a bulk string and leave the rest for a ``callLater(0)``, which
a test without a reactor never runs.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage.redis.feed import _subscriber_protocol
from authproxy.storage.redis.protocol import no_delay, storage_protocol


def _connected() -> tuple[Any, StringTransport]:
    protocol = storage_protocol()(convertNumbers=False)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class InlineRepliesTests(SynchronousTestCase):
    def test_every_reply_of_one_read_is_delivered_at_once(self) -> None:
        protocol, _ = _connected()
        replies: list[Deferred[Any]] = [
            protocol.hmget("h", ["a", "b", "c"]),
            protocol.get("k"),
            protocol.execute_command("INCR", "n"),
            protocol.get("gone"),
        ]
        protocol.dataReceived(b"*3\r\n$1\r\n1\r\n$2\r\n22\r\n$-1\r\n$5\r\nhello\r\n:7\r\n$-1\r\n")
        self.assertEqual(
            [self.successResultOf(d) for d in replies], [["1", "22", None], "hello", 7, None]
        )

    def test_a_reply_split_across_reads_waits_for_its_rest(self) -> None:
        protocol, _ = _connected()
        first, second = protocol.get("k"), protocol.get("l")
        for chunk in (b"$11\r\nhello ", b"world\r\n$", b"2\r\nok", b"\r\n"):
            protocol.dataReceived(chunk)
            if chunk.startswith(b"$11"):
                self.assertNoResult(first)
        self.assertEqual(self.successResultOf(first), "hello world")
        self.assertEqual(self.successResultOf(second), "ok")

    def test_many_replies_in_one_read_do_not_recurse(self) -> None:
        protocol, _ = _connected()
        replies = [protocol.get(f"k{i}") for i in range(5000)]
        protocol.dataReceived(b"$1\r\nx\r\n" * 5000)
        self.assertEqual({self.successResultOf(d) for d in replies}, {"x"})

    def test_commands_are_written_as_txredisapi_writes_them(self) -> None:
        from txredisapi import BaseRedisProtocol

        protocol, transport = _connected()
        args = ("EVALSHA", "ab" * 20, 2, "k:é", b"raw", 1.5, 0, "")
        protocol.execute_command(*args)
        self.assertEqual(transport.value(), BaseRedisProtocol._build_command(protocol, *args))

    def test_subscriber_gets_every_message_of_one_read(self) -> None:
        seen: list[Any] = []

        class Subscriber(_subscriber_protocol()):  # type: ignore[misc]
            def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
                seen.append(message)

        protocol = Subscriber(convertNumbers=False)
        protocol.transport = StringTransport()
        protocol.connected = 1
        message = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\n%d\r\n"
        protocol.dataReceived(message % 1 + message % 2)
        self.assertEqual(seen, ["1", "2"])


class NoDelayTests(SynchronousTestCase):
    def test_tcp_connection_gets_nodelay(self) -> None:
        calls: list[bool] = []

        class TCPTransport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                calls.append(enabled)

        protocol = storage_protocol()(convertNumbers=False)
        protocol.makeConnection(TCPTransport())
        self.assertEqual(calls, [True])

    def test_unix_socket_is_left_alone(self) -> None:
        class UnixTransport(StringTransport):
            def setTcpNoDelay(self, enabled: bool) -> None:
                left, right = socket.socketpair(socket.AF_UNIX)
                try:
                    left.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))
                finally:
                    left.close()
                    right.close()

        self.assertFalse(no_delay(UnixTransport()))  # its OSError does not escape
        self.assertFalse(no_delay(StringTransport()))  # no setTcpNoDelay at all
