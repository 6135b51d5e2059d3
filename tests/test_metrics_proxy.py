"""/metrics and the access log at the proxy: guard refusals by reason, event streams by who
ended them, requests whose client left, and request ids reaching the backend."""

from __future__ import annotations

import io
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from authproxy.http.request import make_request_factory
from authproxy.http.request_id import RequestIds
from authproxy.http.responses import TrustedProxies
from authproxy.http.site import AuthproxySite
from authproxy.ops.access_log import AccessLog
from authproxy.ops.metrics import AuthproxyMetrics
from authproxy.testing.backend import FakeMCPBackend, ProxyHarness, proxy_config
from tests.test_proxy_resource import MCP, RelayTestCase

SSE = {"Accept": "text/event-stream"}


def sample(registry: Any, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def drop_clients(h: ProxyHarness) -> None:
    """Every client connection to the proxy goes away."""
    for pump in list(h.client._agent._pumps):
        pump.clientIO.loseConnection()
    h.flush()


class GuardRefusalTests(RelayTestCase):
    def refusals(self, h: ProxyHarness, reason: str) -> float:
        return sample(h.proxy.events.registry, "authproxy_guard_refusals_total", reason=reason)

    def refuse(self, h: ProxyHarness, authorization: str, reason: str) -> None:
        before = self.refusals(h, reason)
        headers = {"Authorization": authorization}
        response = self.request(h, "POST", MCP, data=b"{}", headers=headers)
        self.assertEqual(response.code, 401)
        self.assertEqual(self.refusals(h, reason), before + 1, reason)

    def test_each_reason_counted(self) -> None:
        h = self.harness()
        self.refuse(h, "Bearer two words", "malformed")
        head, payload, _ = h.token().split(".")
        other_signature = h.token(sub="someone-else").split(".")[2]
        self.refuse(h, f"Bearer {head}.{payload}.{other_signature}", "invalid")
        self.refuse(h, "Bearer " + h.token(exp=int(h.clock.seconds()) - 3600), "expired")
        self.refuse(h, "Bearer " + h.token(aud="https://other.example/mcp"), "wrong_audience")
        revoked = h.token(jti="jti-revoked")
        h.storage.revocations.revoke_jti("jti-revoked", h.clock.seconds() + 900)
        self.refuse(h, "Bearer " + revoked, "revoked")
        self.assertEqual(h.backend.received, [])


class StreamCountTests(RelayTestCase):
    def open(self, h: ProxyHarness, url: str = MCP, **headers: str) -> Any:
        response = self.request(h, "GET", url, headers={**h.auth(), **SSE, **headers})
        done = h.client.collect(response, lambda _: None)
        h.flush()
        return done

    def open_streams(self, h: ProxyHarness) -> float:
        return sample(h.proxy.events.registry, "authproxy_open_streams")

    def ended(self, h: ProxyHarness, by: str) -> float:
        return sample(h.proxy.events.registry, "authproxy_streams_ended_total", by=by)

    def test_backend_ends(self) -> None:
        h = self.harness()
        self.open(h)
        self.open(h)
        self.assertEqual(self.open_streams(h), 2)
        h.backend.end_streams()
        h.flush()
        self.assertEqual((self.open_streams(h), self.ended(h, "backend")), (0, 2))

    def test_backend_dies(self) -> None:
        h = self.harness()
        done = self.open(h)
        h.backend.kill_streams()
        h.flush()
        self.failureResultOf(done)
        self.assertEqual((self.open_streams(h), self.ended(h, "backend_error")), (0, 1))

    def test_client_leaves(self) -> None:
        h = self.harness()
        done = self.open(h)
        self.assertEqual(self.open_streams(h), 1)
        drop_clients(h)
        self.failureResultOf(done)
        self.assertEqual((self.open_streams(h), self.ended(h, "client")), (0, 1))

    def test_shutdown_ends(self) -> None:
        h = self.harness()
        self.open(h)
        self.assertEqual(h.proxy.end_streams(), 1)
        h.flush()
        self.assertEqual((self.open_streams(h), self.ended(h, "shutdown")), (0, 1))

    def test_proxy_cuts_a_legacy_stream_it_cannot_bind(self) -> None:
        # Every stream announces the same legacy session: the second user's is cut.
        endpoint = b"event: endpoint\r\ndata: /messages/?session_id=abc123\r\n\r\n"
        config = proxy_config(backend={"transport": "sse"})
        h = ProxyHarness(config, FakeMCPBackend(sse_path="/sse", endpoint_chunks=(endpoint,)))
        url = "https://mcp.example.com/sse"
        self.open(h, url, Authorization=f"Bearer {h.token(sub='alice')}")
        self.failureResultOf(self.open(h, url, Authorization=f"Bearer {h.token(sub='bob')}"))
        self.assertEqual((self.open_streams(h), self.ended(h, "proxy")), (1, 1))


class ServedBySite:
    """The harness's proxy behind a real ``AuthproxySite``: request ids, access log, metrics."""

    def __init__(self, h: ProxyHarness, trusted: str | None = None) -> None:
        proxies = TrustedProxies.from_cidrs([trusted] if trusted else [])
        reactor = MemoryReactorClock()
        site = AuthproxySite(h.root, reactor=reactor, requestFactory=make_request_factory(1024))
        site.request_ids = RequestIds(proxies)
        site.metrics = self.metrics = AuthproxyMetrics(route_of=h.root.route_name)
        self.out = io.StringIO()
        site.access_log = self.access_log = AccessLog(reactor, out=lambda: self.out)
        # StubTreq serves the resource through a plain Site: serve it through this one.
        h.client._agent._serverFactory = site

    def lines(self) -> list[str]:
        self.access_log.flush()
        return self.out.getvalue().splitlines()


class ClientClosedTests(RelayTestCase):
    def test_stream_the_client_closed_is_logged_and_counted(self) -> None:
        h = self.harness()
        served = ServedBySite(h)
        response = self.request(h, "GET", MCP, headers={**h.auth(), **SSE})
        done = h.client.collect(response, lambda _: None)
        h.flush()
        self.assertEqual(served.lines(), [])  # not finished: no line yet
        drop_clients(h)
        self.failureResultOf(done)
        [line] = served.lines()
        self.assertIn('"GET /mcp HTTP/1.1" 200', line)
        self.assertTrue(line.endswith(" client-closed"), line)
        self.assertEqual(
            sample(
                served.metrics.registry,
                "authproxy_http_requests_total",
                route="proxy",
                method="GET",
                code="200",
            ),
            1,
        )


class RequestIdTests(RelayTestCase):
    def post(self, h: ProxyHarness, **headers: str) -> tuple[str, str]:
        """The id the backend received and the one echoed to the client."""
        response = self.request(h, "POST", MCP, data=b"{}", headers={**h.auth(), **headers})
        self.assertEqual(response.code, 200)
        self.body(h, response)
        [echoed] = response.headers.getRawHeaders("x-request-id")
        [sent] = h.backend.last.headers["x-request-id"]
        return sent, echoed

    def test_generated_id_passed_and_echoed(self) -> None:
        h = self.harness()
        served = ServedBySite(h)
        first, echoed = self.post(h)
        self.assertEqual(first, echoed)
        second, _ = self.post(h)
        self.assertNotEqual(first, second)
        self.assertIn(f" {first} ", served.lines()[0])

    def test_trusted_proxys_id_kept(self) -> None:
        h = self.harness()
        ServedBySite(h, trusted="127.0.0.1/32")  # StubTreq's peer is 127.0.0.1
        self.assertEqual(self.post(h, **{"X-Request-Id": "lb-42"}), ("lb-42", "lb-42"))

    def test_untrusted_id_replaced(self) -> None:
        h = self.harness()
        ServedBySite(h, trusted="192.0.2.0/24")
        sent, echoed = self.post(h, **{"X-Request-Id": "forged-1"})
        self.assertEqual(sent, echoed)
        self.assertNotEqual(sent, "forged-1")

    def test_trusted_proxys_unusable_id_replaced(self) -> None:
        h = self.harness()
        ServedBySite(h, trusted="127.0.0.1/32")
        sent, _ = self.post(h, **{"X-Request-Id": 'has "quotes"'})
        self.assertNotIn('"', sent)
