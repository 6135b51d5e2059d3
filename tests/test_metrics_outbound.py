"""/metrics for what authproxy fetches: IdP requests (count by outcome, latency) and client
ID metadata documents (by outcome)."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authproxy.authserver.cimd.cache import ClientDocuments
from authproxy.authserver.cimd.document import DocumentError
from authproxy.authserver.cimd.fetch import DocumentFetcher
from authproxy.ops.metrics import EventCounters
from authproxy.upstream.http import IdPHTTP
from authproxy.upstream.interface import UpstreamUnavailable
from tests.test_cimd import SCOPES, URL, Documents, vscode_like


def sample(events: EventCounters, name: str, **labels: str) -> float:
    value = events.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class SlowIdP(Resource):
    """Answers each request with ``status`` when the test says so (``answer``)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Request] = []

    def render(self, request: Request) -> int:
        self.waiting.append(request)
        return NOT_DONE_YET

    def answer(self, status: int) -> None:
        request = self.waiting.pop(0)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.write(b'{"access_token": "SECRET"}')
        request.finish()


class IdPRequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.idp = SlowIdP()
        self.stub = StubTreq(self.idp)
        self.http = IdPHTTP(self.stub, self.clock, timeout=10)
        self.http.events = self.events = EventCounters()

    def send(self, endpoint: str) -> Deferred[Any]:
        d = self.http.request("POST", "https://idp.example/token", endpoint=endpoint)
        self.stub.flush()
        return d

    def answer_after(self, seconds: float, status: int) -> None:
        self.clock.advance(seconds)
        self.idp.answer(status)
        self.stub.flush()

    def requests(self, endpoint: str, outcome: str) -> float:
        return sample(
            self.events, "authproxy_upstream_requests_total", endpoint=endpoint, outcome=outcome
        )

    def latency(self, endpoint: str, le: str) -> float:
        return sample(
            self.events,
            "authproxy_upstream_request_duration_seconds_bucket",
            endpoint=endpoint,
            le=le,
        )

    def test_outcomes_and_latency(self) -> None:
        ok = self.send("token")
        self.answer_after(0.2, 200)
        self.assertEqual(self.successResultOf(ok).status, 200)
        refused = self.send("token")
        self.answer_after(0.02, 400)
        self.assertEqual(self.successResultOf(refused).status, 400)
        down = self.send("refresh")
        self.answer_after(1.5, 503)
        self.failureResultOf(down, UpstreamUnavailable)
        self.assertEqual(self.requests("token", "ok"), 1)
        self.assertEqual(self.requests("token", "http_4xx"), 1)
        self.assertEqual(self.requests("refresh", "unavailable"), 1)
        # The reactor's clock times each request: 0.02 s and 0.2 s, then 1.5 s.
        self.assertEqual((self.latency("token", "0.025"), self.latency("token", "0.1")), (1, 1))
        self.assertEqual(self.latency("token", "0.25"), 2)
        self.assertEqual((self.latency("refresh", "1.0"), self.latency("refresh", "2.5")), (0, 1))
        self.assertAlmostEqual(
            sample(
                self.events, "authproxy_upstream_request_duration_seconds_sum", endpoint="token"
            ),
            0.22,
        )

    def test_timeout(self) -> None:
        d = self.send("userinfo")
        self.clock.advance(10)
        self.failureResultOf(d, UpstreamUnavailable)
        self.assertEqual(self.requests("userinfo", "timeout"), 1)
        self.assertEqual(self.latency("userinfo", "10.0"), 1)
        self.assertEqual(self.latency("userinfo", "5.0"), 0)


class ClientDocumentFetchTests(SynchronousTestCase):
    def documents(self, docs: Documents) -> EventCounters:
        events = EventCounters()
        fetcher = DocumentFetcher(docs.settings, docs.clock, docs.resolver, docs._http_for)
        docs.documents = ClientDocuments(docs.settings, fetcher, docs.clock, SCOPES, events=events)
        return events

    def fetches(self, events: EventCounters, outcome: str) -> float:
        return sample(events, "authproxy_client_document_fetches_total", outcome=outcome)

    def test_success_counted_once_then_cached(self) -> None:
        docs = Documents()
        events = self.documents(docs)
        self.successResultOf(docs.resolve())
        self.successResultOf(docs.resolve())  # from the cache: no fetch
        self.assertEqual(self.fetches(events, "success"), 1)

    def test_fetch_failed(self) -> None:
        docs = Documents()
        events = self.documents(docs)
        docs.resource.status = 404
        self.failureResultOf(docs.resolve(), DocumentError)
        self.assertEqual(self.fetches(events, "fetch_failed"), 1)
        self.assertEqual(self.fetches(events, "success"), 0)

    def test_invalid_document(self) -> None:
        docs = Documents()
        events = self.documents(docs)
        docs.resource.body = json.dumps({**vscode_like(), "client_secret": "x"}).encode()
        self.failureResultOf(docs.resolve(URL), DocumentError)
        self.assertEqual(self.fetches(events, "invalid_document"), 1)
        self.assertEqual(self.fetches(events, "fetch_failed"), 0)
