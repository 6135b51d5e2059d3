"""The IdP reachability probe (real loopback sockets, never cached), given by the wiring."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from authproxy.config import Config, validate_config
from authproxy.storage.memory import memory_storage
from authproxy.upstream.interface import UpstreamUnavailable
from authproxy.upstream.reachability import ReachabilityProbe
from authproxy.upstream.registry import make_upstream_provider


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


class _RecordingProbe:
    """Stands in for ReachabilityProbe: records the URLs it is asked about."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, url: str) -> Deferred[None]:
        self.checked.append(url)
        return succeed(None)


def _oauth2_config() -> Config:
    return validate_config(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {
                "type": "oauth2",
                "client_id": "c",
                "authorization_endpoint": "https://idp.example/authorize",
                "token_endpoint": "https://idp.example/token",
                "userinfo": {"endpoint_url": "https://idp.example/user"},
            },
        }
    )


class ProviderProbeTests(SynchronousTestCase):
    """The wiring decides whether a provider probes; the provider never asks its reactor."""

    def provider(self, reachability: Any) -> Any:
        clock = Clock()
        sessions = memory_storage(clock).upstream_sessions
        return make_upstream_provider(
            _oauth2_config(), sessions, clock, http=object(), reachability=reachability
        )

    def test_the_given_probe_is_asked_about_the_authorization_endpoint(self) -> None:
        probe = _RecordingProbe()
        self.successResultOf(self.provider(probe).check_reachable())
        self.assertEqual(probe.checked, ["https://idp.example/authorize"])

    def test_without_a_probe_the_browser_is_sent_straight_on(self) -> None:
        self.assertIsNone(self.successResultOf(self.provider(None).check_reachable()))
