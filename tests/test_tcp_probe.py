"""The TCP probe shared by backend readiness and IdP reachability: real loopback sockets."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from authproxy.http.tcp_probe import accepts_connections, url_host_port


class _Accepted(Protocol):
    def __init__(self, closed: Deferred[None]) -> None:
        self._closed = closed

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self._closed.callback(None)


class AcceptsConnectionsTests(TestCase):
    @inlineCallbacks
    def test_listening_port_accepts_and_is_hung_up_on(self) -> Any:
        closed: Deferred[None] = Deferred()
        factory = ServerFactory.forProtocol(lambda: _Accepted(closed))
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        answer = yield accepts_connections(reactor, "127.0.0.1", port.getHost().port, 2.0)
        self.assertIs(answer, True)
        yield closed.addTimeout(5, reactor)  # the probe closed its side: nothing lingers

    @inlineCallbacks
    def test_closed_port_is_false_not_an_error(self) -> Any:
        port: Any = reactor.listenTCP(0, ServerFactory.forProtocol(Protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
        number = port.getHost().port
        yield port.stopListening()
        answer = yield accepts_connections(reactor, "127.0.0.1", number, 2.0)
        self.assertIs(answer, False)


class URLHostPortTests(SynchronousTestCase):
    def test_scheme_default_ports(self) -> None:
        self.assertEqual(url_host_port("http://idp.example/authorize"), ("idp.example", 80))
        self.assertEqual(url_host_port("https://idp.example/authorize"), ("idp.example", 443))
        self.assertEqual(url_host_port("http://[::1]:8080/mcp"), ("::1", 8080))

    def test_no_host(self) -> None:
        self.assertEqual(url_host_port("/authorize"), ("", 80))
