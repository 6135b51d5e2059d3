"""The IdP reachability probe: real loopback sockets, success cached, failure not."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from authproxy.upstream.interface import UpstreamUnavailable
from authproxy.upstream.reachability import ReachabilityProbe


class ReachabilityProbeTests(TestCase):
    @inlineCallbacks
    def test_listening_host_is_reachable_every_time(self) -> Any:
        factory = Factory.forProtocol(Protocol)
        accepted: list[object] = []
        factory.buildProtocol = lambda addr: accepted.append(addr) or Protocol()  # type: ignore[method-assign]
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/authorize"
        probe = ReachabilityProbe(reactor)
        yield probe.check(url)
        yield probe.check(url)
        self.assertEqual(len(accepted), 2, "every login probes afresh")

    @inlineCallbacks
    def test_closed_port_is_unavailable(self) -> Any:
        factory = Factory.forProtocol(Protocol)
        port: Any = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        number = port.getHost().port
        yield port.stopListening()
        probe = ReachabilityProbe(reactor)
        with self.assertRaises(UpstreamUnavailable):
            yield probe.check(f"http://127.0.0.1:{number}/authorize")
