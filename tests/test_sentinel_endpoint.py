"""SentinelMasterEndpoint and its RESP exchange, against fake sentinels on a MemoryReactor."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.storage.redis.resp import Incomplete, RespError, command, parse_reply
from authproxy.storage.redis.sentinel import MasterNotFound, SentinelMasterEndpoint

ASK = command("SENTINEL", "get-master-addr-by-name", "mymaster")
MASTER_AT_7001 = b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n7001\r\n"
UNKNOWN = b"*-1\r\n"
ROLE_MASTER = b"*3\r\n$6\r\nmaster\r\n:42\r\n*0\r\n"
ROLE_REPLICA = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:7002\r\n$9\r\nconnected\r\n:42\r\n"


class RespTests(SynchronousTestCase):
    def test_command_is_an_array_of_bulk_strings(self) -> None:
        self.assertEqual(command("GET", b"k"), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")

    def test_parses_every_kind_nested(self) -> None:
        data = b"*5\r\n+OK\r\n-ERR no\r\n:7\r\n$-1\r\n*1\r\n$2\r\nab\r\nrest"
        reply, end = parse_reply(data)
        self.assertEqual(data[end:], b"rest")
        self.assertEqual(reply[0], "OK")
        self.assertIsInstance(reply[1], RespError)
        self.assertEqual(str(reply[1]), "ERR no")
        self.assertEqual(reply[2:], [7, None, [b"ab"]])
        self.assertEqual(parse_reply(UNKNOWN), (None, len(UNKNOWN)))

    def test_incomplete_and_garbage(self) -> None:
        for partial in (b"", b"*2\r\n$9\r\n127.0", MASTER_AT_7001[:-1]):
            self.assertRaises(Incomplete, parse_reply, partial)
        for garbage in (b"HTTP/1.1 400\r\n", b"$x\r\n"):
            self.assertRaises(ValueError, parse_reply, garbage)


class Recorder(Protocol):
    """The protocol the endpoint's caller wanted connected."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class SentinelMasterEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sentinels = [("10.0.0.5", 26379), ("10.0.0.6", 26379), ("10.0.0.7", 26379)]
        self.endpoint = SentinelMasterEndpoint(self.reactor, self.sentinels, "mymaster")

    def connect(self) -> Deferred[Any]:
        return self.endpoint.connect(Factory.forProtocol(Recorder))

    def accept(self, index: int, expect: tuple[str, int]) -> tuple[Any, StringTransport]:
        """Complete the index-th connection attempt, which must go to ``expect``."""
        host, port, factory, _timeout, _bind = self.reactor.tcpClients[index]
        self.assertEqual((host, port), expect)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        return protocol, transport

    def refuse(self, index: int) -> None:
        _host, _port, factory, _timeout, _bind = self.reactor.tcpClients[index]
        connector = self.reactor.connectors[index]
        factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))

    def answer(self, index: int, expect: tuple[str, int], reply: bytes) -> StringTransport:
        protocol, transport = self.accept(index, expect)
        protocol.dataReceived(reply)
        return transport

    def test_asks_the_first_sentinel_connects_checks_role_and_hands_over(self) -> None:
        d = self.connect()
        sentinel = self.answer(0, self.sentinels[0], MASTER_AT_7001)
        self.assertEqual(sentinel.value(), ASK)
        self.assertTrue(sentinel.disconnecting)  # one question per connection
        protocol, master = self.accept(1, ("127.0.0.1", 7001))
        self.assertEqual(master.value(), command("ROLE"))
        self.assertNoResult(d)
        protocol.dataReceived(ROLE_MASTER + b"+PONG\r\n")
        inner = self.successResultOf(d)
        self.assertIsInstance(inner, Recorder)
        self.assertIs(inner.transport, master)
        self.assertFalse(master.disconnecting)
        protocol.dataReceived(b"+OK\r\n")  # later data reaches the caller's protocol
        self.assertEqual(inner.received, b"+PONG\r\n+OK\r\n")
        self.assertEqual(len(self.reactor.tcpClients), 2)  # the other sentinels not asked

    def test_down_slow_and_unknowing_sentinels_are_skipped_in_order(self) -> None:
        d = self.connect()
        self.refuse(0)
        self.accept(1, self.sentinels[1])  # answers nothing
        self.reactor.advance(self.endpoint.timeout)
        self.answer(2, self.sentinels[2], UNKNOWN)
        failure = self.failureResultOf(d, MasterNotFound)
        message = str(failure.value)
        self.assertIn("no sentinel named master 'mymaster'", message)
        self.assertIn("10.0.0.5:26379 Connection was refused", message)
        self.assertIn("10.0.0.6:26379 did not answer in time", message)
        self.assertIn("10.0.0.7:26379 does not know it", message)

        d = self.connect()  # the next attempt asks again, from the first
        self.refuse(3)
        self.answer(4, self.sentinels[1], MASTER_AT_7001)
        protocol, _ = self.accept(5, ("127.0.0.1", 7001))
        protocol.dataReceived(ROLE_MASTER)
        self.assertIsInstance(self.successResultOf(d), Recorder)

    def test_error_reply_from_a_sentinel_is_skipped(self) -> None:
        d = self.connect()
        self.answer(0, self.sentinels[0], b"-ERR unknown command\r\n")
        self.answer(1, self.sentinels[1], MASTER_AT_7001)
        self.accept(2, ("127.0.0.1", 7001))[0].dataReceived(ROLE_MASTER)
        self.successResultOf(d)

    def test_a_demoted_master_is_refused_and_the_next_attempt_rediscovers(self) -> None:
        d = self.connect()
        self.answer(0, self.sentinels[0], MASTER_AT_7001)
        protocol, master = self.accept(1, ("127.0.0.1", 7001))
        protocol.dataReceived(ROLE_REPLICA)
        failure = self.failureResultOf(d, MasterNotFound)
        self.assertIn("127.0.0.1:7001", str(failure.value))
        self.assertIn("says it is a slave, not a master", str(failure.value))
        self.assertTrue(master.disconnecting)

        d = self.connect()
        self.answer(2, self.sentinels[0], b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n7002\r\n")
        self.accept(3, ("127.0.0.1", 7002))[0].dataReceived(ROLE_MASTER)
        self.successResultOf(d)

    def test_password_authenticates_the_role_check_and_never_shows(self) -> None:
        endpoint = SentinelMasterEndpoint(
            self.reactor, self.sentinels[:1], "mymaster", password="hunter2"
        )
        d = endpoint.connect(Factory.forProtocol(Recorder))
        self.answer(0, self.sentinels[0], MASTER_AT_7001)
        protocol, master = self.accept(1, ("127.0.0.1", 7001))
        self.assertEqual(master.value(), command("AUTH", "hunter2") + command("ROLE"))
        protocol.dataReceived(b"-WRONGPASS invalid username-password pair\r\n-NOAUTH x\r\n")
        failure = self.failureResultOf(d, MasterNotFound)
        self.assertIn("WRONGPASS", str(failure.value))
        self.assertNotIn("hunter2", str(failure.value) + repr(endpoint))

    def test_a_hung_master_times_out(self) -> None:
        d = self.connect()
        self.answer(0, self.sentinels[0], MASTER_AT_7001)
        _, master = self.accept(1, ("127.0.0.1", 7001))
        self.reactor.advance(self.endpoint.timeout)
        self.assertTrue(master.disconnecting or master.disconnected)
        self.failureResultOf(d)

    def test_cancel_while_asking_stops_without_trying_the_next(self) -> None:
        d = self.connect()
        _, sentinel = self.accept(0, self.sentinels[0])
        d.cancel()
        self.assertTrue(sentinel.disconnecting or sentinel.disconnected)
        self.failureResultOf(d)
        self.assertEqual(len(self.reactor.tcpClients), 1)


class DeploymentTests(SynchronousTestCase):
    def test_link_and_feed_both_connect_through_the_sentinels(self) -> None:
        from authproxy.config import StorageConfig
        from authproxy.storage.capacity import StorageCaps
        from authproxy.storage.redis.deployment import redis_storage_for
        from tests.test_storage_redis import RING

        config = StorageConfig(
            type="redis",
            url="redis://mymaster/2",
            sentinels=("10.0.0.5:26379", "sentinel.internal:26379"),
            sentinel_master="mymaster",
        )
        storage = redis_storage_for(config, StorageCaps(), MemoryReactorClock(), RING)
        link, feed = storage.services
        endpoint = link.endpoint  # type: ignore[attr-defined]
        self.assertIsInstance(endpoint, SentinelMasterEndpoint)
        self.assertEqual(endpoint.sentinels, (("10.0.0.5", 26379), ("sentinel.internal", 26379)))
        self.assertIs(feed.subscription.endpoint, endpoint)  # type: ignore[attr-defined]
        self.assertEqual(link.factory.dbid, 2)  # type: ignore[attr-defined]
        self.assertEqual(
            storage.readiness(),
            (
                False,
                "not connected to redis master mymaster via "
                "10.0.0.5:26379,sentinel.internal:26379 db 2",
            ),
        )
