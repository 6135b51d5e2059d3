"""Caps on the backend connections open at once, in total and per grant (proxy/limits.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionRefusedError

from authproxy.testing.backend import ProxyHarness, proxy_config
from authproxy.upstream.interface import UpstreamSessionEnded
from tests.test_proxy_resource import MCP, FailingAgent, RelayTestCase


class ConnectionLimitTests(RelayTestCase):
    def open_stream(self, h: ProxyHarness, token: str) -> Any:
        response = self.request(
            h, "GET", MCP, headers={**h.auth(token), "Accept": "text/event-stream"}
        )
        if response.code == 200:
            done = h.client.collect(response, lambda _: None)
            done.addErrback(lambda _: None)  # cut streams are the point of some tests
            h.flush()
        return response

    def test_streams_beyond_per_grant_cap_get_503(self) -> None:
        h = self.harness(backend={"max_connections_per_grant": 2})
        for _ in range(2):
            self.assertEqual(self.open_stream(h, h.token()).code, 200)
        streams = len(h.backend.streams)
        # A new token (a refresh: new jti) of the same user and client counts the same.
        response = self.open_stream(h, h.token())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        body = self.json(h, response)
        self.assertEqual(body["error"], "too_many_connections")
        self.assertIn("2 connections", body["error_description"])
        self.assertEqual(len(h.backend.streams), streams, "no backend connection was opened")
        # Another client of the same user, and another user, are not affected.
        self.assertEqual(self.open_stream(h, h.token(client_id="client-2")).code, 200)
        self.assertEqual(self.open_stream(h, h.token(sub="user-2")).code, 200)

    def test_total_cap(self) -> None:
        h = self.harness(backend={"max_connections": 3, "max_connections_per_grant": 2})
        self.open_stream(h, h.token(sub="a"))
        self.open_stream(h, h.token(sub="a"))
        self.open_stream(h, h.token(sub="b"))
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth(h.token(sub="c")))
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        self.assertIn("connection limit", self.json(h, response)["error_description"])

    def test_ended_streams_free_their_connections(self) -> None:
        h = self.harness(backend={"max_connections_per_grant": 1})
        self.open_stream(h, h.token())
        self.assertEqual(h.proxy.limits.in_use, 1)
        h.backend.end_streams()
        h.flush()
        self.assertEqual(h.proxy.limits.in_use, 0)
        self.open_stream(h, h.token())
        h.backend.kill_streams()  # a backend death frees it too
        h.flush()
        self.assertEqual(h.proxy.limits.in_use, 0)
        self.open_stream(h, h.token())
        for pump in list(h.client._agent._pumps):  # the client leaves
            pump.clientIO.loseConnection()
        h.flush()
        self.assertEqual(h.proxy.limits.in_use, 0)
        self.assertEqual(self.open_stream(h, h.token()).code, 200)

    def test_short_requests_free_their_connections(self) -> None:
        h = self.harness(backend={"max_connections_per_grant": 1})
        for _ in range(3):
            response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
            self.assertEqual(response.code, 200)
            self.body(h, response)
        self.assertEqual(h.proxy.limits.in_use, 0)

    def test_failures_free_their_connections(self) -> None:
        h = ProxyHarness(agent=FailingAgent(ConnectionRefusedError()))
        self.assertEqual(self.request(h, "POST", MCP, data=b"{}", headers=h.auth()).code, 502)
        timeout = FailingAgent()
        h2 = ProxyHarness(agent=timeout)
        d = h2.client.post(MCP, data=b"{}", headers=h2.auth())
        h2.flush()
        self.assertEqual(h2.proxy.limits.in_use, 1)
        h2.clock.advance(h2.config.backend.response_timeout + 1)
        h2.flush()
        self.assertEqual(self.successResultOf(d).code, 504)
        h3 = self.harness()
        h3.provider.failures["tsid-1"] = UpstreamSessionEnded("gone")
        self.assertEqual(self.request(h3, "POST", MCP, data=b"{}", headers=h3.auth()).code, 401)
        for harness in (h, h2, h3):
            self.assertEqual(harness.proxy.limits.in_use, 0)

    def test_defaults(self) -> None:
        backend = proxy_config().backend
        self.assertEqual((backend.max_connections, backend.max_connections_per_grant), (256, 16))
