"""SentinelMasterEndpoint and its RESP exchange, against fake sentinels on a MemoryReactor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import ConfigError, config_from_mapping
from authproxy.storage.redis.resp import (
    Incomplete,
    RespError,
    RespExchange,
    command,
    parse_reply,
)
from authproxy.storage.redis.sentinel import MasterNotFound, SentinelMasterEndpoint
from tests.e2e.tls import LoopbackCA
from tests.test_redis_wiring import turn_until

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

    def test_deep_nesting_is_a_protocol_error(self) -> None:
        # a hostile sentinel's 5000 nested arrays raised RecursionError out of the parser
        nested = b"*1\r\n" * 5000 + b":1\r\n"
        self.assertRaises(ValueError, parse_reply, nested)
        exchange = RespExchange([ASK])
        transport = StringTransport()
        exchange.makeConnection(transport)
        exchange.dataReceived(nested)
        self.failureResultOf(exchange.replies, ValueError)
        self.assertTrue(transport.disconnecting or transport.disconnected)

    def test_a_reply_trickled_a_byte_at_a_time_is_read(self) -> None:
        # the reader keeps its place: each byte is read once, not the whole buffer per chunk
        reply = b"*2000\r\n" + b":1\r\n" * 1999 + b"$2\r\nok\r\n"
        exchange = RespExchange([ASK])
        exchange.makeConnection(StringTransport())
        for i in range(len(reply)):
            exchange.dataReceived(reply[i : i + 1])
        self.assertEqual(self.successResultOf(exchange.replies), [[1] * 1999 + [b"ok"]])


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

    def test_what_a_sentinel_says_is_logged_quoted_and_short(self) -> None:
        endpoint = SentinelMasterEndpoint(self.reactor, self.sentinels[:2], "mymaster")
        d = endpoint.connect(Factory.forProtocol(Recorder))
        self.answer(0, self.sentinels[0], b"-ERR x\nforged log line " + b"A" * 5000 + b"\r\n")
        host = b"127.0.0.1\nforged"
        self.answer(1, self.sentinels[1], b"*2\r\n$%d\r\n%s\r\n$4\r\n7001\r\n" % (len(host), host))
        message = str(self.failureResultOf(d, MasterNotFound).value)
        self.assertNotIn("\n", message)
        self.assertLess(len(message), 600)
        self.assertEqual(len(self.reactor.tcpClients), 2)  # the odd "host" was not tried

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


def serve_tls(
    test: SynchronousTestCase, ca: LoopbackCA, answer: bytes = b""
) -> tuple[int, list[bytes]]:
    """A TLS server on loopback with ``ca``'s certificate for 127.0.0.1: its port, and the
    application data it received; it sends ``answer`` once a whole RESP command is in."""
    received: list[bytes] = []

    class Node(Protocol):
        def dataReceived(self, data: bytes) -> None:
            received.append(data)
            if answer and b"".join(received).endswith(b"\r\n"):
                self.transport.write(answer)  # type: ignore[union-attr]

    pem = ca.key_file.read_bytes() + ca.cert_file.read_bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    port = global_reactor.listenSSL(  # type: ignore[attr-defined]
        0, Factory.forProtocol(Node), options, interface="127.0.0.1"
    )
    test.addCleanup(port.stopListening)
    return port.getHost().port, received


class SentinelTrustTests(SynchronousTestCase):
    """With a password, sentinels and data nodes alike are spoken to only over TLS whose
    certificate chains to ``ca_file``: neither a rogue sentinel, nor a node a sentinel names,
    ever receives a password (real TLS on loopback)."""

    def setUp(self) -> None:
        ours, rogue = Path(self.mktemp()), Path(self.mktemp())
        ours.mkdir(parents=True)
        rogue.mkdir(parents=True)
        self.ours, self.rogue = LoopbackCA.create(ours), LoopbackCA.create(rogue)

    def endpoint(self, sentinel_port: int) -> SentinelMasterEndpoint:
        return SentinelMasterEndpoint(
            global_reactor,
            [("127.0.0.1", sentinel_port)],
            "mymaster",
            tls=True,
            ca_pem=self.ours.ca_file.read_bytes(),
            password="data-hunter2",
            sentinel_password="sentinel-hunter2",
            timeout=10,
        )

    def connect(self, endpoint: SentinelMasterEndpoint) -> Any:
        results: list[Any] = []
        endpoint.connect(Factory.forProtocol(Recorder)).addBoth(results.append)
        turn_until(lambda: results)
        return results[0]

    def test_a_node_a_sentinel_names_without_our_certificate_gets_no_password(self) -> None:
        rogue_port, rogue_got = serve_tls(self, self.rogue, b"+OK\r\n")
        named = b"*2\r\n$9\r\n127.0.0.1\r\n$%d\r\n%d\r\n" % (len(str(rogue_port)), rogue_port)
        sentinel_port, sentinel_got = serve_tls(self, self.ours, b"+OK\r\n" + named)
        result = self.connect(self.endpoint(sentinel_port))
        self.assertIsInstance(result, Failure)
        self.assertEqual(rogue_got, [])  # not one byte of AUTH reached it
        asked = b"".join(sentinel_got)
        self.assertEqual(asked, command("AUTH", "sentinel-hunter2") + ASK)

    def test_a_rogue_sentinel_gets_no_password(self) -> None:
        sentinel_port, sentinel_got = serve_tls(self, self.rogue, MASTER_AT_7001)
        result = self.connect(self.endpoint(sentinel_port))
        self.assertIsInstance(result, Failure)
        self.assertEqual(sentinel_got, [])

    def test_config_refuses_a_password_a_sentinel_could_send_elsewhere(self) -> None:
        base = {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"type": "development"},
        }
        sentinels = {"sentinels": ["127.0.0.1:26379"], "sentinel_master": "mymaster"}
        for storage, problem in (
            (
                {"url": "redis://mymaster/0", "password_file": "/run/pw", **sentinels},
                "storage.password_file: with sentinels, needs a rediss:// url",
            ),
            (
                {"url": "rediss://mymaster/0", **sentinels},
                "storage.ca_file: required with sentinels and a rediss:// url",
            ),
            (
                {"url": "redis://r/0", "sentinel_password_file": "/run/pw"},
                "storage.sentinel_password_file: only with sentinels",
            ),
        ):
            with self.assertRaises(ConfigError) as caught:
                config_from_mapping({**base, "storage": {"type": "redis", **storage}})
            self.assertIn(problem, str(caught.exception))
