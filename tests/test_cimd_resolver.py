"""Metadata document host names are resolved on a thread pool of their own, bounded.

An attacker names many URLs on a wildcard domain whose name server never answers; each
lookup holds a thread for 20 s or more. On the reactor's shared pool that stalled every
HostnameEndpoint in the process (backend, IdP, Redis by name, /ready). Real threads here,
blocked on an Event instead of a name server, and the real reactor; deadlines are bounds,
never measurements.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from authproxy.authserver.cimd.addresses import threaded_resolver
from authproxy.authserver.cimd.cache import FAILURE_TTL
from authproxy.authserver.cimd.document import DocumentError, DocumentsBusy
from authproxy.http.tcp_probe import accepts_connections
from authproxy.proxy.backend_client import BackendAgent
from authproxy.testing.upstream import s256_pair
from tests.test_cimd import URL, Documents
from tests.test_cimd_flow import REDIRECT, harness

DEADLINE = 10.0  # seconds; a bound on a wait that, when all is well, ends at once


class Hanging:
    """A blocking lookup that does not return until ``release``: a silent name server."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.released.wait(60)
        raise OSError(f"{host} did not resolve")

    def release(self) -> None:
        self.released.set()


class StarvationTests(TestCase):
    def hanging_resolver(self, **limits: Any) -> Any:
        hanging = Hanging()
        resolver = threaded_resolver(reactor, lookup=hanging, **limits)
        lookups: list[Deferred[Any]] = []

        def cleanup() -> Deferred[Any]:
            hanging.release()
            done = DeferredList(lookups, consumeErrors=True)
            stop = getattr(resolver, "stop", None)
            return done.addCallback(lambda _: stop() if stop else None)

        self.addCleanup(cleanup)
        return resolver, lookups

    async def test_hanging_lookups_leave_the_reactor_thread_pool_free(self) -> None:
        resolver, lookups = self.hanging_resolver()
        for i in range(40):  # more than any pool; extra ones are refused, not queued
            lookups.append(resolver(f"r{i}.attacker.example", 443))
        answered = await deferToThread(lambda: "answered").addTimeout(DEADLINE, reactor)
        self.assertEqual(answered, "answered")

    async def test_lookups_beyond_the_cap_are_refused_at_once(self) -> None:
        resolver, lookups = self.hanging_resolver(threads=2, max_pending=3)
        for i in range(3):
            lookups.append(resolver(f"r{i}.attacker.example", 443))
        refused = resolver("r3.attacker.example", 443)
        self.failureResultOf(refused, DocumentsBusy)
        # A lookup abandoned by its caller (the fetch timed out) still holds its thread,
        # so it still counts.
        lookups[0].cancel()
        self.failureResultOf(resolver("r4.attacker.example", 443), DocumentsBusy)


class IPLiteralConnectionTests(TestCase):
    """Connections to IP literals never wait for the reactor's thread pool."""

    def setUp(self) -> None:
        port: Any = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        # Saturate the reactor's thread pool: every thread blocked until cleanup.
        blocked = threading.Event()
        pool = reactor.getThreadPool()  # type: ignore[attr-defined]
        held = [deferToThread(blocked.wait, 60) for _ in range(pool.max)]
        self.addCleanup(lambda: DeferredList(held, consumeErrors=True))
        self.addCleanup(blocked.set)

    async def test_backend_connection_to_an_address(self) -> None:
        agent = BackendAgent(reactor, f"http://127.0.0.1:{self.port}", connect_timeout=DEADLINE)
        self.addCleanup(agent.closeCachedConnections)
        protocol = await agent._endpoint.connect(Factory.forProtocol(Protocol)).addTimeout(
            DEADLINE, reactor
        )
        self.assertIsNotNone(protocol.transport)
        protocol.transport.loseConnection()

    async def test_tcp_probe_of_an_address(self) -> None:
        answer = await accepts_connections(reactor, "127.0.0.1", self.port, DEADLINE).addTimeout(
            DEADLINE + 1, reactor
        )
        self.assertIs(answer, True)


class FetchCapTests(SynchronousTestCase):
    """At most ``max_fetches`` documents are fetched at once; beyond, refused and not kept."""

    def test_fetches_beyond_the_cap_are_refused_until_one_ends(self) -> None:
        docs = Documents(max_fetches=2)
        hanging = [docs.resolve(f"https://r{i}.attacker.example/c.json") for i in range(2)]
        self.failureResultOf(docs.resolve(URL), DocumentsBusy)
        self.assertEqual(docs.resource.requests, 0)
        docs.clock.advance(docs.settings.fetch_timeout)  # the hanging fetches time out
        for d in hanging:
            self.failureResultOf(d, DocumentError)
        self.successResultOf(docs.resolve(URL))  # the refusal was not remembered

    def test_a_host_that_failed_to_resolve_is_not_resolved_again_for_a_while(self) -> None:
        docs = Documents()
        docs.resolver.answers["internal.example"] = ["10.0.0.8"]
        first = docs.resolve("https://internal.example/a.json")
        self.failureResultOf(first, DocumentError)
        second = docs.resolve("https://internal.example/b.json")  # another URL, same host
        self.failureResultOf(second, DocumentError)
        self.assertEqual(docs.resolver.asked, ["internal.example"])
        # the silent name server: the timed-out lookup is remembered for the host as well
        silent = docs.resolve("https://r1.attacker.example/a.json")
        docs.clock.advance(docs.settings.fetch_timeout)
        self.failureResultOf(silent, DocumentError)
        self.failureResultOf(docs.resolve("https://r1.attacker.example/b.json"), DocumentError)
        self.assertEqual(docs.resolver.asked.count("r1.attacker.example"), 1)
        docs.clock.advance(FAILURE_TTL + 1)
        self.failureResultOf(docs.resolve("https://internal.example/c.json"), DocumentError)
        self.assertEqual(docs.resolver.asked.count("internal.example"), 2)

    def test_busy_at_the_token_endpoint_is_503_with_retry_after(self) -> None:
        h = harness(Documents(max_fetches=0))
        answer = h.post_form(
            "/oauth/token", {"grant_type": "authorization_code", "code": "x", "client_id": URL}
        )
        self.assertEqual(answer.code, 503, answer.body)
        self.assertEqual(answer.json()["error"], "temporarily_unavailable")
        self.assertIsNotNone(answer.header("retry-after"))

    def test_busy_at_authorize_is_an_error_page_asking_to_retry(self) -> None:
        h = harness(Documents(max_fetches=0))
        _, challenge = s256_pair()
        page = h.get(h.authorize_url({"client_id": URL, "redirect_uris": [REDIRECT]}, challenge))
        self.assertEqual(page.code, 503)
        self.assertIsNone(page.header("location"))
        self.assertIsNotNone(page.header("retry-after"))
        self.assertIn(b"busy", page.body)
