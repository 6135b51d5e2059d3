"""HostFacilities: the wiring, not the reactor's type, decides on inotify and the IdP probe."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from authproxy.application import DAEMON, Application, HostFacilities, build_application
from authproxy.config import config_from_mapping
from authproxy.keys.watcher import SecretWatcher
from authproxy.upstream.interface import UpstreamUnavailable


def oauth2_application(facilities: HostFacilities) -> tuple[Application, MemoryReactorClock]:
    config = config_from_mapping(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9"},
            "upstream": {
                "type": "oauth2",
                "client_id": "c",
                "authorization_endpoint": "http://127.0.0.1:9443/authorize",
                "token_endpoint": "http://127.0.0.1:9443/token",
                "userinfo": {"endpoint_url": "http://127.0.0.1:9443/user"},
            },
        }
    )
    reactor = MemoryReactorClock()
    return build_application(config, reactor, facilities), reactor


def watcher_of(app: Application) -> SecretWatcher:
    (watcher,) = [s for s in app.services if isinstance(s, SecretWatcher)]
    return watcher


class FacilitiesTests(SynchronousTestCase):
    def test_by_default_neither_inotify_nor_probe(self) -> None:
        app, reactor = oauth2_application(HostFacilities())
        self.assertFalse(watcher_of(app).use_inotify)
        self.successResultOf(app.provider.check_reachable())
        self.assertEqual(reactor.tcpClients, [], "no connection to the IdP is attempted")

    def test_daemon_watches_with_inotify_and_probes_the_idp(self) -> None:
        app, reactor = oauth2_application(DAEMON)
        self.assertTrue(watcher_of(app).use_inotify)
        probing = app.provider.check_reachable()
        self.assertNoResult(probing)
        [(host, port, factory, *_)] = reactor.tcpClients
        self.assertEqual((host, port), ("127.0.0.1", 9443))
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        reactor.advance(1)  # the endpoint gives up once its attempt timer has run
        self.failureResultOf(probing, UpstreamUnavailable)
