"""The streaming relay in memory: StubTreq -> proxy -> RequestTraversalAgent -> fake backend."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseFailed
from twisted.web.iweb import IAgent
from twisted.web.server import Request
from zope.interface import implementer

from authproxy.storage.models import UpstreamTokenSession
from authproxy.testing.backend import FakeMCPBackend, ProxyHarness, proxy_config
from authproxy.upstream.interface import UpstreamError, UpstreamUnavailable
from authproxy.upstream.sessions import TokenResponse, TokenSessions

MCP = "https://mcp.example.com/mcp"


class RelayTestCase(SynchronousTestCase):
    def harness(self, **sections: dict[str, Any]) -> ProxyHarness:
        return ProxyHarness(proxy_config(**sections) if sections else None)

    def request(self, h: ProxyHarness, method: str, url: str, **kwargs: Any) -> Any:
        d = h.client.request(method, url, **kwargs)
        h.flush()
        return self.successResultOf(d)

    def body(self, h: ProxyHarness, response: Any) -> bytes:
        d = response.content()
        h.flush()
        return self.successResultOf(d)

    def json(self, h: ProxyHarness, response: Any) -> Any:
        return json.loads(self.body(h, response))


class HeaderTests(RelayTestCase):
    def test_post_relayed_with_mcp_headers_untouched(self) -> None:
        h = self.harness()
        token = h.token()
        self.request(h, "POST", MCP, data=b"{}", headers=h.auth(token))  # creates session-1
        headers = {
            **h.auth(token),
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "Mcp-Session-Id": "session-1",
            "MCP-Protocol-Version": "2025-06-18",
            "Last-Event-ID": "42",
            "Mcp-Method": "tools/call",
            "Mcp-Name": "echo",
            "Mcp-Param-Text": "hi",
            "X-Unknown-Header": "u",
        }
        response = self.request(
            h, "POST", MCP + "?a=1&b=2", data=b'{"jsonrpc":"2.0"}', headers=headers
        )
        self.assertEqual(response.code, 200)
        echo = self.json(h, response)
        self.assertEqual((echo["method"], echo["path"], echo["query"]), ("POST", "/mcp", "a=1&b=2"))
        self.assertEqual(echo["body"], '{"jsonrpc":"2.0"}')
        seen = h.backend.last
        for name in (
            "mcp-session-id",
            "mcp-protocol-version",
            "last-event-id",
            "mcp-method",
            "mcp-name",
            "mcp-param-text",
            "x-unknown-header",
            "content-type",
            "accept",
        ):
            self.assertEqual(seen.headers[name], [headers[_orig(headers, name)]], name)
        # The response's MCP and unknown headers reach the client too.
        self.assertEqual(response.headers.getRawHeaders("mcp-session-id"), ["session-1"])
        self.assertEqual(response.headers.getRawHeaders("x-backend-custom"), ["kept"])

    def test_host_is_the_backend(self) -> None:
        h = self.harness()
        self.request(h, "POST", MCP, data=b"{}", headers={**h.auth(), "Host": "mcp.example.com"})
        self.assertEqual(h.backend.last.headers["host"], ["127.0.0.1:9000"])
        self.assertEqual(h.backend.last.headers["x-forwarded-host"], ["mcp.example.com"])

    def test_client_authorization_never_reaches_backend(self) -> None:
        h = self.harness(upstream_token={"header_strategy": "none"})
        self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertNotIn("authorization", h.backend.last.headers)

    def test_replace_strategy_sends_upstream_token(self) -> None:
        h = self.harness()
        token = h.token()
        self.request(h, "POST", MCP, data=b"{}", headers=h.auth(token))
        self.assertEqual(h.backend.last.headers["authorization"], ["Bearer upstream-token-1"])
        self.assertEqual(h.provider.calls, ["tsid-1"])

    def test_custom_strategy_uses_named_header(self) -> None:
        h = self.harness(upstream_token={"header_strategy": "custom", "custom_header": "X-Up"})
        self.request(
            h, "POST", MCP, data=b"{}", headers={**h.auth(), "X-Up": "forged by the client"}
        )
        self.assertEqual(h.backend.last.headers["x-up"], ["Bearer upstream-token-1"])
        self.assertNotIn("authorization", h.backend.last.headers)

    def test_hop_by_hop_removed_towards_backend(self) -> None:
        h = self.harness()
        self.request(
            h,
            "POST",
            MCP,
            data=b"{}",
            headers={
                **h.auth(),
                "Connection": "keep-alive, X-Client-Hop",
                "X-Client-Hop": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Trailer": "X-T",
                "Upgrade": "websocket",
                "Proxy-Authorization": "Basic eA==",
                "X-Kept": "yes",
            },
        )
        seen = h.backend.last.headers
        for name in (
            "x-client-hop",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
        ):
            self.assertNotIn(name, seen)
        self.assertNotEqual(seen.get("connection"), ["keep-alive, X-Client-Hop"])
        self.assertEqual(seen["x-kept"], ["yes"])

    def test_hop_by_hop_removed_towards_client(self) -> None:
        h = self.harness()
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.body(h, response)
        for name in ("keep-alive", "proxy-authenticate"):
            self.assertFalse(response.headers.hasHeader(name), name)
        self.assertEqual(response.headers.getRawHeaders("x-backend-custom"), ["kept"])

    def test_connection_listed_headers_removed_from_streams(self) -> None:
        h = self.harness()
        h.backend.response_headers = {
            b"connection": b"x-backend-hop",
            b"x-backend-hop": b"dropped",
            b"keep-alive": b"timeout=5",
            b"x-backend-custom": b"kept",
        }
        response = self.request(h, "GET", MCP, headers={**h.auth(), "Accept": "text/event-stream"})
        self.assertFalse(response.headers.hasHeader("x-backend-hop"))
        self.assertFalse(response.headers.hasHeader("keep-alive"))
        self.assertEqual(response.headers.getRawHeaders("x-backend-custom"), ["kept"])

    def test_forwarded_headers_from_untrusted_peer_are_replaced(self) -> None:
        h = self.harness()
        self.request(
            h,
            "POST",
            MCP,
            data=b"{}",
            headers={
                **h.auth(),
                "X-Forwarded-For": "6.6.6.6",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "evil.example",
            },
        )
        seen = h.backend.last.headers
        self.assertEqual(seen["x-forwarded-for"], ["127.0.0.1"])
        # StubTreq's https connection is the truth, not the forged header
        self.assertEqual(seen["x-forwarded-proto"], ["https"])
        self.assertNotEqual(seen["x-forwarded-host"], ["evil.example"])

    def test_forwarded_headers_from_trusted_proxy_are_extended(self) -> None:
        h = self.harness(server={"trusted_proxies": ["127.0.0.0/8"]})
        self.request(
            h,
            "POST",
            MCP,
            data=b"{}",
            headers={
                **h.auth(),
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "mcp.example.com",
            },
        )
        seen = h.backend.last.headers
        self.assertEqual(seen["x-forwarded-for"], ["203.0.113.7, 127.0.0.1"])
        self.assertEqual(seen["x-forwarded-proto"], ["http"])
        self.assertEqual(seen["x-forwarded-host"], ["mcp.example.com"])

    def test_spoofable_client_address_headers_never_reach_backend(self) -> None:
        h = self.harness()
        self.request(
            h,
            "POST",
            MCP,
            data=b"{}",
            headers={
                **h.auth(),
                "X-Real-IP": "6.6.6.6",
                "True-Client-IP": "6.6.6.6",
                "X-Client-IP": "6.6.6.6",
                "X-Forwarded-Port": "1",
                "X-Forwarded-Prefix": "/evil",
                "Forwarded": "for=6.6.6.6",
            },
        )
        seen = h.backend.last.headers
        for name in (
            "x-real-ip",
            "true-client-ip",
            "x-client-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "forwarded",
        ):
            self.assertNotIn(name, seen)
        self.assertEqual(seen["x-forwarded-for"], ["127.0.0.1"])

    def test_other_forwarded_headers_from_trusted_proxy_pass(self) -> None:
        h = self.harness(server={"trusted_proxies": ["127.0.0.0/8"]})
        self.request(
            h,
            "POST",
            MCP,
            data=b"{}",
            headers={**h.auth(), "X-Forwarded-Port": "443", "X-Real-IP": "203.0.113.7"},
        )
        seen = h.backend.last.headers
        self.assertEqual(seen["x-forwarded-port"], ["443"])
        # The one client address the backend gets is X-Forwarded-For's.
        self.assertNotIn("x-real-ip", seen)

    def test_client_copy_of_custom_header_never_reaches_backend(self) -> None:
        # Whatever the strategy, the backend may trust the configured header to come from
        # authproxy: a client's own copy (its own "upstream token") is dropped.
        for strategy in ("replace", "none"):
            h = self.harness(upstream_token={"header_strategy": strategy})
            self.request(
                h,
                "POST",
                MCP,
                data=b"{}",
                headers={**h.auth(), "X-Upstream-Authorization": "Bearer forged"},
            )
            self.assertNotIn("x-upstream-authorization", h.backend.last.headers, strategy)

    def test_authproxy_cookies_stripped_others_kept(self) -> None:
        h = self.harness()
        cookie = (
            "theme=dark; authproxy-consent-ab12=v; __Host-authproxy-csrf-cd34=w; "
            "session=x; __Host-authproxy-login=y; authproxy-login-ef=z"
        )
        self.request(h, "POST", MCP, data=b"{}", headers={**h.auth(), "Cookie": cookie})
        self.assertEqual(h.backend.last.headers["cookie"], ["theme=dark; session=x"])

    def test_only_authproxy_cookies_drops_cookie_header(self) -> None:
        h = self.harness()
        cookie = "__Host-authproxy-consent-ab12=v;authproxy-csrf-1=w"
        self.request(h, "POST", MCP, data=b"{}", headers={**h.auth(), "Cookie": cookie})
        self.assertNotIn("cookie", h.backend.last.headers)

    def test_backend_status_codes_pass_unchanged(self) -> None:
        h = self.harness()
        for code in (400, 404, 405):
            response = self.request(
                h, "POST", f"https://mcp.example.com/status/{code}", data=b"{}", headers=h.auth()
            )
            self.assertEqual(response.code, code)
            self.assertEqual(self.json(h, response), {"status": code})

    def test_delete_relayed(self) -> None:
        h = self.harness()
        self.request(h, "POST", MCP, data=b"{}", headers=h.auth())  # creates session-1
        response = self.request(
            h, "DELETE", MCP, headers={**h.auth(), "Mcp-Session-Id": "session-1"}
        )
        self.assertEqual(response.code, 204)
        self.assertEqual(h.backend.last.method, "DELETE")

    def test_other_methods_refused(self) -> None:
        h = self.harness()
        response = self.request(h, "PUT", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 405)
        self.assertEqual(h.backend.received, [])


class OriginTests(RelayTestCase):
    def test_foreign_origin_refused(self) -> None:
        h = self.harness()
        response = self.request(
            h, "POST", MCP, data=b"{}", headers={**h.auth(), "Origin": "https://evil.example"}
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.json(h, response)["error"], "forbidden_origin")
        self.assertEqual(h.backend.received, [])

    def test_public_origin_and_allowed_origins_accepted(self) -> None:
        h = self.harness(server={"allowed_origins": ["http://localhost:6274"]})
        for origin in (
            "https://mcp.example.com",
            "https://MCP.example.com:443",
            "http://localhost:6274",
        ):
            response = self.request(
                h, "POST", MCP, data=b"{}", headers={**h.auth(), "Origin": origin}
            )
            self.assertEqual(response.code, 200, origin)
            self.assertEqual(
                response.headers.getRawHeaders("access-control-allow-origin"), [origin]
            )

    def test_no_origin_accepted(self) -> None:
        h = self.harness()
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 200)

    def test_preflight_needs_no_token(self) -> None:
        h = self.harness()
        response = self.request(
            h,
            "OPTIONS",
            MCP,
            headers={"Origin": "https://mcp.example.com", "Access-Control-Request-Method": "POST"},
        )
        self.assertEqual(response.code, 204)
        self.assertIn(
            "Authorization", response.headers.getRawHeaders("access-control-allow-headers")[0]
        )


class BodyLimitTests(RelayTestCase):
    def test_declared_length_over_limit_is_413(self) -> None:
        h = self.harness(server={"max_request_body": "100B"})
        response = self.request(h, "POST", MCP, data=b"x" * 101, headers=h.auth())
        self.assertEqual(response.code, 413)
        self.assertEqual(self.json(h, response)["error"], "request_too_large")
        self.assertEqual(h.backend.received, [])

    def test_at_limit_passes(self) -> None:
        h = self.harness(server={"max_request_body": "100B"})
        response = self.request(h, "POST", MCP, data=b"x" * 100, headers=h.auth())
        self.assertEqual(response.code, 200)


class StreamingTests(RelayTestCase):
    def open_stream(self, h: ProxyHarness, url: str = MCP) -> tuple[Any, list[bytes], Deferred]:
        response = self.request(h, "GET", url, headers={**h.auth(), "Accept": "text/event-stream"})
        chunks: list[bytes] = []
        done = h.client.collect(response, chunks.append)
        h.flush()
        return response, chunks, done

    def test_sse_headers_sent_before_first_event(self) -> None:
        h = self.harness()
        response, chunks, done = self.open_stream(h)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/event-stream"])
        self.assertEqual(response.headers.getRawHeaders("x-accel-buffering"), ["no"])
        self.assertEqual(chunks, [])
        self.assertNoResult(done)

    def test_events_relayed_one_by_one(self) -> None:
        h = self.harness()
        _, chunks, done = self.open_stream(h)
        for i in range(3):
            h.backend.send_event(f'{{"n":{i}}}')
            h.flush()
            self.assertEqual(b"".join(chunks).count(b"\n\n"), i + 1)
        self.assertNoResult(done)
        h.clock.advance(3600)  # no total timeout on a stream
        h.backend.send_event("late")
        h.flush()
        self.assertIn(b"data: late", b"".join(chunks))
        h.backend.end_streams()
        h.flush()
        self.successResultOf(done)

    def test_backend_death_aborts_client_stream(self) -> None:
        # A backend that dies mid-stream must not look like a clean end: the client's
        # chunked response is cut (no terminating 0-chunk), so it knows events may be lost.
        h = self.harness()
        _, chunks, done = self.open_stream(h)
        h.backend.send_event("one")
        h.flush()
        h.backend.kill_streams()
        h.flush()
        failure = self.failureResultOf(done)
        self.assertTrue(failure.check(ResponseFailed), failure)
        self.assertEqual(b"".join(chunks), b"data: one\n\n")
        # ... and the proxy keeps serving.
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 200)

    def test_backend_clean_end_finishes_client_stream(self) -> None:
        h = self.harness()
        _, chunks, done = self.open_stream(h)
        h.backend.send_event("one")
        h.backend.end_streams()
        h.flush()
        self.successResultOf(done)
        self.assertEqual(b"".join(chunks), b"data: one\n\n")

    def test_client_disconnect_closes_backend_stream(self) -> None:
        h = self.harness()
        _, _, done = self.open_stream(h)
        self.assertEqual(len(h.backend.streams), 1)
        # Drop the client's connection to the proxy.
        for pump in list(h.client._agent._pumps):  # type: ignore[attr-defined]
            pump.clientIO.loseConnection()
        h.flush()
        self.failureResultOf(done)
        self.assertEqual(h.backend.streams, [])
        self.assertEqual(h.backend.streams_lost, 1)

    def test_flush_runs_stream_batching_waits_and_refuses_to_spin_forever(self) -> None:
        h = self.harness()
        _, chunks, _ = self.open_stream(h)
        for n in range(5):  # separate small reads at one instant: a burst the client batches
            h.backend.send_event(str(n))
            h.backend_endpoint.pump()
        h.flush()
        self.assertEqual(b"".join(chunks), b"".join(b"data: %d\n\n" % n for n in range(5)))
        h.backend_endpoint.pump = lambda: True  # type: ignore[method-assign]
        self.assertRaises(AssertionError, h.flush)

    def test_slow_client_pauses_backend(self) -> None:
        h = self.harness()
        self.open_stream(h)
        # The proxy's end of its backend connection, and of the client's connection.
        backend_side = h.backend_endpoint.pumps[0].clientIO
        calls: list[str] = []
        backend_side.pauseProducing = lambda: calls.append("pause")
        backend_side.resumeProducing = lambda: calls.append("resume")
        front = next(iter(h.client._agent._pumps)).serverIO.protocol  # type: ignore[attr-defined]
        channel = getattr(front, "_channel", front)
        # What the client socket does when its send buffer fills, then drains.
        channel.pauseProducing()
        self.assertEqual(calls, ["pause"])
        channel.resumeProducing()
        self.assertEqual(calls, ["pause", "resume"])


class EndpointRewriteTests(RelayTestCase):
    def sse_harness(self, chunks: tuple[bytes, ...], **server: Any) -> ProxyHarness:
        config = proxy_config(
            backend={"transport": "sse"}, server={"public_url": "https://mcp.example.com", **server}
        )
        return ProxyHarness(config, FakeMCPBackend(sse_path="/sse", endpoint_chunks=chunks))

    def stream(self, h: ProxyHarness) -> bytes:
        response = self.request(
            h,
            "GET",
            "https://mcp.example.com/sse",
            headers={**h.auth(), "Accept": "text/event-stream"},
        )
        chunks: list[bytes] = []
        h.client.collect(response, chunks.append)
        h.flush()
        return b"".join(chunks)

    def test_relative_endpoint(self) -> None:
        h = self.sse_harness((b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n",))
        self.assertEqual(
            self.stream(h), b"event: endpoint\r\ndata: /messages/?session_id=abc\r\n\r\n"
        )

    def test_absolute_endpoint(self) -> None:
        h = self.sse_harness(
            (b"event: endpoint\ndata: http://127.0.0.1:9000/messages/?session_id=abc&x=1\n\n",)
        )
        self.assertEqual(
            self.stream(h),
            b"event: endpoint\ndata: https://mcp.example.com/messages/?session_id=abc&x=1\n\n",
        )

    def test_split_across_chunks(self) -> None:
        raw = b"event: endpoint\r\ndata: http://127.0.0.1:9000/messages/?session_id=abc\r\n\r\n"
        chunks = tuple(raw[i : i + 1] for i in range(len(raw)))
        h = self.sse_harness(chunks + (b"data: {}\n\n",))
        self.assertEqual(
            self.stream(h),
            b"event: endpoint\r\ndata: https://mcp.example.com/messages/?session_id=abc\r\n\r\n"
            b"data: {}\n\n",
        )

    def test_message_path_is_proxied_and_guarded(self) -> None:
        h = self.sse_harness((b"event: endpoint\ndata: /messages/?session_id=abc\n\n",))
        self.stream(h)
        url = "https://mcp.example.com/messages/?session_id=abc"
        response = self.request(h, "POST", url, data=b"{}")
        self.assertEqual(response.code, 401)
        response = self.request(h, "POST", url, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 200)
        self.assertEqual(h.backend.last.path, "/messages/")
        self.assertEqual(h.backend.last.query, "session_id=abc")


@implementer(IAgent)
class FailingAgent:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.pending: list[Deferred] = []

    def request(
        self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None
    ) -> Deferred:
        d: Deferred = Deferred()
        if self.error is not None:
            d.errback(self.error)
        else:
            self.pending.append(d)
        return d


class BackendFailureTests(RelayTestCase):
    def test_unreachable_backend_is_502_json(self) -> None:
        h = ProxyHarness(agent=FailingAgent(ConnectionRefusedError()))
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 502)
        self.assertEqual(self.json(h, response)["error"], "bad_gateway")

    def test_no_response_headers_in_time_is_504(self) -> None:
        agent = FailingAgent()
        h = ProxyHarness(agent=agent)
        d = h.client.post(MCP, data=b"{}", headers=h.auth())
        h.flush()
        self.assertNoResult(d)
        h.clock.advance(h.config.backend.response_timeout + 1)
        h.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 504)

    def test_upstream_session_ended_is_401(self) -> None:
        h = self.harness()
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth(h.token(tsid="gone")))
        self.assertEqual(response.code, 401)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('error="invalid_token"', challenge)
        self.assertIn("sign in again", self.json(h, response)["error_description"])
        self.assertEqual(h.backend.received, [])

    def test_upstream_transient_failure_is_503(self) -> None:
        h = self.harness()
        h.provider.failures["tsid-1"] = UpstreamUnavailable("IdP timed out", retry_after=7)
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["7"])
        self.assertEqual(h.backend.received, [])

    def test_upstream_error_is_502(self) -> None:
        h = self.harness()
        h.provider.failures["tsid-1"] = UpstreamError("bad answer")
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 502)


class BackendUnauthorizedTests(RelayTestCase):
    """A backend 401 to the user's upstream token: refresh once and replay, else sign in again."""

    def refused(self, h: ProxyHarness, *tokens: str) -> None:
        h.backend.refused_tokens.update(b"Bearer " + t.encode() for t in tokens)

    def test_refreshed_and_replayed_once(self) -> None:
        h = self.harness()
        self.refused(h, "upstream-token-1")
        h.provider.refreshed["tsid-1"] = "upstream-token-2"
        response = self.request(h, "POST", MCP, data=b'{"id":1}', headers=h.auth())
        self.assertEqual(response.code, 200)
        self.assertEqual(self.json(h, response)["body"], '{"id":1}')  # the body replayed
        self.assertEqual(h.provider.refreshes, [("tsid-1", "upstream-token-1")])
        sent = [r.headers["authorization"] for r in h.backend.received]
        self.assertEqual(sent, [["Bearer upstream-token-1"], ["Bearer upstream-token-2"]])
        self.assertEqual(h.provider.ended, [])

    def test_refused_again_ends_the_session_with_our_challenge(self) -> None:
        h = self.harness()
        self.refused(h, "upstream-token-1", "upstream-token-2")
        h.provider.refreshed["tsid-1"] = "upstream-token-2"
        for method in ("GET", "DELETE", "POST"):
            h.provider.tokens["tsid-1"] = "upstream-token-1"
            h.provider.refreshed["tsid-1"] = "upstream-token-2"
            response = self.request(h, method, MCP, data=b"{}", headers=h.auth())
            self.assertEqual(response.code, 401, method)
            (challenge,) = response.headers.getRawHeaders("www-authenticate")
            self.assertIn('error="invalid_token"', challenge)
            self.assertIn("resource_metadata=", challenge)
            self.assertNotIn("backend", challenge)
            self.assertNotIn(b"backend says no", self.body(h, response))
        self.assertEqual(h.provider.ended, ["tsid-1"] * 3)
        self.assertEqual(len(h.backend.received), 6)  # each tried twice, never more

    def test_refresh_refused_ends_the_session(self) -> None:
        h = self.harness()
        self.refused(h, "upstream-token-1")
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 401)
        challenge = response.headers.getRawHeaders("www-authenticate")[0]
        self.assertIn('error="invalid_token"', challenge)
        self.assertIn("sign in again", self.json(h, response)["error_description"])
        self.assertEqual(len(h.backend.received), 1)
        self.assertEqual(h.provider.ended, ["tsid-1"])

    def test_refresh_unavailable_is_503(self) -> None:
        h = self.harness()
        self.refused(h, "upstream-token-1")

        def unavailable(tsid: str, rejected: str) -> Deferred[str]:
            return fail(UpstreamUnavailable("IdP timed out", retry_after=7))

        h.provider.refresh_upstream_token = unavailable  # type: ignore[method-assign]
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["7"])

    def test_post_not_replayed_without_an_invalid_token_challenge(self) -> None:
        # review 2 F1: only an auth layer's invalid_token says the POST was never acted on
        for challenge in (None, b'Bearer realm="backend"', b'Basic realm="x", Bearer'):
            h = self.harness()
            h.backend.refusal_challenge = challenge
            self.refused(h, "upstream-token-1")
            h.provider.refreshed["tsid-1"] = "upstream-token-2"
            response = self.request(h, "POST", MCP, data=b'{"id":1}', headers=h.auth())
            self.assertEqual(response.code, 401, challenge)
            (ours,) = response.headers.getRawHeaders("www-authenticate")
            self.assertIn('error="invalid_token"', ours)
            self.assertIn("resource_metadata=", ours)
            self.assertEqual(len(h.backend.received), 1, challenge)  # never replayed
            # renewed for the client's own retry, and the session kept
            self.assertEqual(h.provider.refreshes, [("tsid-1", "upstream-token-1")])
            self.assertEqual(h.provider.ended, [])
            retry = self.request(h, "POST", MCP, data=b'{"id":1}', headers=h.auth())
            self.assertEqual(retry.code, 200)

    def test_get_replayed_only_after_a_bearer_challenge(self) -> None:
        for challenge, tries in ((b'Bearer realm="backend"', 2), (None, 1), (b"Basic", 1)):
            h = self.harness()
            h.backend.refusal_challenge = challenge
            self.refused(h, "upstream-token-1")
            h.provider.refreshed["tsid-1"] = "upstream-token-2"
            response = self.request(h, "DELETE", MCP, headers=h.auth())
            self.assertEqual(response.code, 204 if tries == 2 else 401, challenge)
            self.assertEqual(len(h.backend.received), tries, challenge)
            self.assertEqual(h.provider.ended, [])

    def test_backend_401s_refresh_at_most_once_per_window(self) -> None:
        # review 2 F1 (refresh_amplification.py): every request's first try refused, its
        # replay accepted; 20 requests made 20 IdP refreshes
        idp: list[CountingSessions] = []

        def upstream(h: ProxyHarness) -> CountingSessions:
            idp.append(CountingSessions(h.config, h.storage.upstream_sessions, h.clock))
            session = UpstreamTokenSession(
                tsid="tsid-1",
                upstream_name="x",
                access_token="at-0",
                refresh_token="rt-0",
                access_token_expires_at=h.clock.seconds() + 3600,
                expires_at=h.clock.seconds() + 86400,
                subject="user-1",
                claims={},
                id_token=None,
            )
            h.storage.upstream_sessions.put_upstream_session(session)
            return idp[0]

        h = ProxyHarness(backend=FlakyBackend(sse_path="/sse"), upstream=upstream)
        codes = [
            self.request(h, "POST", MCP, data=b'{"id":1}', headers=h.auth()).code for _ in range(20)
        ]
        self.assertEqual(codes[0], 200)  # one hiccup: refreshed and replayed
        self.assertEqual(idp[0].calls, 1)
        # the refreshed token refused too: the session ended, the client asked to sign in
        self.assertEqual(set(codes[1:]), {401})
        self.assertEqual(len(h.backend.received), 3)

    def test_one_backend_hiccup_keeps_the_session(self) -> None:
        h = self.harness()
        self.refused(h, "upstream-token-1")
        h.provider.refreshed["tsid-1"] = "upstream-token-2"
        for _ in range(3):
            response = self.request(h, "GET", MCP, headers=h.auth())
            self.assertEqual(response.code, 200)
        self.assertEqual(len(h.provider.refreshes), 1)
        self.assertEqual(h.provider.ended, [])

    def test_without_upstream_token_a_backend_401_is_502(self) -> None:
        h = self.harness(upstream_token={"header_strategy": "none"})
        h.backend.response_headers[b"www-authenticate"] = b'Basic realm="backend"'
        response = self.request(h, "GET", "https://mcp.example.com/status/401", headers=h.auth())
        self.assertEqual(response.code, 502)
        self.assertIsNone(response.headers.getRawHeaders("www-authenticate"))
        self.assertEqual(self.json(h, response)["error"], "bad_gateway")

    def test_backend_challenge_never_relayed(self) -> None:
        h = self.harness()
        h.backend.response_headers[b"www-authenticate"] = b'Bearer error="insufficient_scope"'
        response = self.request(h, "GET", "https://mcp.example.com/status/403", headers=h.auth())
        self.assertEqual(response.code, 403)
        self.assertIsNone(response.headers.getRawHeaders("www-authenticate"))


class FlakyBackend(FakeMCPBackend):
    """Refuses every other request with a Bearer challenge, whatever its token."""

    arrivals = 0

    def render(self, request: Request) -> Any:
        self.arrivals += 1
        if self.arrivals % 2:
            self.received.append(None)  # type: ignore[arg-type]
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer error="invalid_token"')
            return b"no"
        return super().render(request)


class CountingSessions(TokenSessions):
    """Real upstream sessions whose IdP refresh always succeeds, counted."""

    calls = 0

    def _refresh(self, session: UpstreamTokenSession) -> Deferred[TokenResponse]:
        self.calls += 1
        return succeed(
            TokenResponse(
                access_token=f"at-{self.calls}",
                token_type="Bearer",
                expires_in=3600,
                refresh_token=f"rt-{self.calls}",
            )
        )


def _orig(headers: dict[str, str], lower: str) -> str:
    return next(k for k in headers if k.lower() == lower)
