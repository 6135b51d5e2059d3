"""The private fields of Twisted's TCP transport that tcp_internals.py reads, checked on a
real loopback connection: a Twisted upgrade that renames them fails here, not silently in
production (where write_now would quietly fall back to the slower queued write)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from authproxy.http.tcp_internals import PRIVATE_FIELDS, idle_socket


class _Server(Protocol):
    received: Deferred[bytes]

    def dataReceived(self, data: bytes) -> None:
        if not self.received.called:
            self.received.callback(data)


class TcpInternalsTests(TestCase):
    async def connect(self) -> tuple[Any, Deferred[bytes]]:
        received: Deferred[bytes] = Deferred()

        def server() -> _Server:
            protocol = _Server()
            protocol.received = received
            return protocol

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(server)
        )
        self.addCleanup(port.stopListening)
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            Factory.forProtocol(Protocol)
        )
        transport = client.transport
        self.addCleanup(transport.abortConnection)
        return transport, received

    async def test_private_fields_exist_on_a_connected_transport(self) -> None:
        transport, _ = await self.connect()
        self.assertIsInstance(transport, tcp.Connection)
        missing = [name for name in PRIVATE_FIELDS if not hasattr(transport, name)]
        self.assertEqual(missing, [], "Twisted's tcp.Connection changed: see tcp_internals.py")
        self.assertEqual(transport._tempDataLen, 0)
        self.assertFalse(transport._aborting)

    async def test_idle_until_bytes_are_queued(self) -> None:
        transport, received = await self.connect()
        sock = idle_socket(transport)
        self.assertIs(sock, transport.socket)
        transport.write(b"queued")  # sent on the reactor's next iteration, not now
        self.assertGreater(transport._tempDataLen, 0)
        self.assertIsNone(idle_socket(transport))
        self.assertEqual(await received, b"queued")
        self.assertIs(idle_socket(transport), sock)  # the buffer drained: idle again

    async def test_not_idle_once_closing_or_aborting(self) -> None:
        transport, _ = await self.connect()
        transport.abortConnection()
        self.assertTrue(transport._aborting)
        self.assertIsNone(idle_socket(transport))

    def test_other_transports_are_never_idle(self) -> None:
        self.assertIsNone(idle_socket(StringTransport()))
