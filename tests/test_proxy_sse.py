"""The legacy SSE transport: ``event: endpoint`` rewriting, and its sessions bound to their user."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.proxy.sse import EndpointEventRewriter, EndpointURLMapper
from authproxy.testing.backend import FakeMCPBackend, ProxyHarness, proxy_config
from tests.test_proxy_resource import RelayTestCase

STREAM_URL = "http://127.0.0.1:9000/sse"
PUBLIC = "https://mcp.example.com"
MESSAGES = "/messages/?session_id=abc123"
ENDPOINT = b"event: endpoint\r\ndata: /messages/?session_id=abc123\r\n\r\n"


def rewriter(public_url: str = "https://mcp.example.com", backend: str = "http://127.0.0.1:9000"):
    mapper = EndpointURLMapper(backend, public_url)
    return EndpointEventRewriter(lambda url: mapper(url, STREAM_URL))


def run(chunks: list[bytes], r: EndpointEventRewriter | None = None) -> bytes:
    r = r or rewriter()
    return b"".join(r.feed(c) for c in chunks) + r.flush()


class MapperTests(SynchronousTestCase):
    def test_forms(self) -> None:
        mapper = EndpointURLMapper("http://127.0.0.1:9000", "https://mcp.example.com")
        cases = {
            "/messages/?session_id=abc": "/messages/?session_id=abc",
            "messages/?session_id=abc": "/messages/?session_id=abc",
            "http://127.0.0.1:9000/messages/?session_id=abc&x=%20": (
                "https://mcp.example.com/messages/?session_id=abc&x=%20"
            ),
            "http://localhost:9000/m": "https://mcp.example.com/m",
        }
        for announced, expected in cases.items():
            self.assertEqual(mapper(announced, STREAM_URL), expected, announced)

    def test_backend_prefix_and_public_path(self) -> None:
        mapper = EndpointURLMapper("http://10.0.0.1:9000/backend", "https://h.example/ap")
        stream = "http://10.0.0.1:9000/backend/sse"
        self.assertEqual(mapper("/backend/messages?s=1", stream), "/ap/messages?s=1")
        self.assertEqual(
            mapper("http://10.0.0.1:9000/backend/messages?s=1", stream),
            "https://h.example/ap/messages?s=1",
        )


class RewriterTests(SynchronousTestCase):
    endpoint = b"event: endpoint\r\ndata: http://127.0.0.1:9000/messages/?session_id=abc\r\n\r\n"
    rewritten = b"event: endpoint\r\ndata: https://mcp.example.com/messages/?session_id=abc\r\n\r\n"

    def test_whole(self) -> None:
        self.assertEqual(run([self.endpoint]), self.rewritten)

    def test_every_split_point(self) -> None:
        tail = b': comment\n\nevent: message\ndata: {"endpoint": 1}\n\n'
        raw = self.endpoint + tail
        for i in range(1, len(raw)):
            self.assertEqual(run([raw[:i], raw[i:]]), self.rewritten + tail, i)

    def test_byte_by_byte(self) -> None:
        raw = self.endpoint + b"data: x\n\n"
        self.assertEqual(
            run([raw[i : i + 1] for i in range(len(raw))]), self.rewritten + b"data: x\n\n"
        )

    def test_field_order_and_line_endings(self) -> None:
        for eol in (b"\n", b"\r", b"\r\n"):
            raw = b"data: /messages/?s=1" + eol + b"event: endpoint" + eol + eol
            self.assertEqual(
                run([raw]), b"data: /messages/?s=1" + eol + b"event: endpoint" + eol + eol
            )
            absolute = raw.replace(b"/messages", b"http://127.0.0.1:9000/messages")
            self.assertEqual(
                run([absolute]),
                b"data: https://mcp.example.com/messages/?s=1"
                + eol
                + b"event: endpoint"
                + eol
                + eol,
            )

    def test_cr_lf_split_between_chunks(self) -> None:
        raw = self.endpoint
        cut = raw.index(b"\r\n\r\n") + 3  # between the last \r and \n
        self.assertEqual(run([raw[:cut], raw[cut:]]), self.rewritten)

    def test_other_events_untouched_and_immediate(self) -> None:
        r = rewriter()
        event = b'event: message\ndata: {"jsonrpc": "2.0"}\n\n'
        self.assertEqual(r.feed(event), event)
        self.assertEqual(r.feed(b"data: endpoint is a word\n\n"), b"data: endpoint is a word\n\n")
        self.assertEqual(r.feed(b": keepalive\r\n\r\n"), b": keepalive\r\n\r\n")

    def test_partial_event_held_until_complete(self) -> None:
        r = rewriter()
        self.assertEqual(r.feed(b"event: endpoint\n"), b"")
        self.assertEqual(r.feed(b"data: /m?s=1\n\n"), b"event: endpoint\ndata: /m?s=1\n\n")

    def test_large_event_streams_through(self) -> None:
        r = EndpointEventRewriter(lambda url: "REWRITTEN", max_held=100)
        big = b"data: " + b"x" * 500 + b"\n"
        out = r.feed(b"event: message\n") + r.feed(big[:250]) + r.feed(big[250:]) + r.feed(b"\n")
        self.assertEqual(out, b"event: message\n" + big + b"\n")
        # ...and the parser is back in step for the next event.
        self.assertEqual(
            r.feed(b"event: endpoint\ndata: /a\n\n"), b"event: endpoint\ndata: REWRITTEN\n\n"
        )

    def test_unfinished_event_flushed_at_end(self) -> None:
        r = rewriter()
        self.assertEqual(r.feed(b"event: endpoint\ndata: /m"), b"")
        self.assertEqual(r.flush(), b"event: endpoint\ndata: /m")


class LegacySessionBindingTests(RelayTestCase):
    """The legacy transport's message URL is bound to the user and client whose stream
    announced it (proxy/resource.py, like Mcp-Session-Id in tests/test_proxy_sessions.py)."""

    def harness_with(self, endpoint: bytes = ENDPOINT, **backend: Any) -> ProxyHarness:
        config = proxy_config(backend={"transport": "sse", **backend})
        return ProxyHarness(config, FakeMCPBackend(sse_path="/sse", endpoint_chunks=(endpoint,)))

    def open_stream(self, h: ProxyHarness, token: str) -> tuple[list[bytes], Deferred[Any]]:
        response = self.request(
            h, "GET", PUBLIC + "/sse", headers={**h.auth(token), "Accept": "text/event-stream"}
        )
        self.assertEqual(response.code, 200)
        chunks: list[bytes] = []
        done = h.client.collect(response, chunks.append)
        h.flush()
        return chunks, done

    def post(self, h: ProxyHarness, token: str, target: str = MESSAGES) -> Any:
        return self.request(h, "POST", PUBLIC + target, data=b"{}", headers=h.auth(token))

    def test_another_users_token_cannot_post_into_a_legacy_session(self) -> None:
        h = self.harness_with()
        chunks, _ = self.open_stream(h, h.token(sub="alice"))
        self.assertIn(MESSAGES.encode(), b"".join(chunks))
        received = len(h.backend.received)
        response = self.post(h, h.token(sub="mallory"))
        self.assertEqual(response.code, 404)
        self.assertEqual(self.json(h, response)["error"], "session_not_found")
        self.assertEqual(len(h.backend.received), received, "the backend never saw it")

    def test_opener_posts_into_its_legacy_session(self) -> None:
        h = self.harness_with()
        self.open_stream(h, h.token(sub="alice"))
        # A refreshed token (new jti) of the same user and client keeps the session.
        response = self.post(h, h.token(sub="alice"))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            (h.backend.last.path, h.backend.last.query), ("/messages/", "session_id=abc123")
        )

    def test_same_user_other_client_gets_404(self) -> None:
        h = self.harness_with()
        self.open_stream(h, h.token(client_id="client-1"))
        for method in ("POST", "GET", "DELETE"):
            response = self.request(
                h, method, PUBLIC + MESSAGES, headers=h.auth(h.token(client_id="client-2"))
            )
            self.assertEqual(response.code, 404, method)

    def test_unknown_legacy_session_gets_404_like_a_foreign_one(self) -> None:
        h = self.harness_with()
        unknown = self.post(h, h.token(sub="alice"))
        self.open_stream(h, h.token(sub="alice"))
        foreign = self.post(h, h.token(sub="mallory"))
        self.assertEqual((unknown.code, foreign.code), (404, 404))
        self.assertEqual(self.body(h, unknown), self.body(h, foreign))
        self.assertEqual([r.method for r in h.backend.received], ["GET"])

    def test_session_ends_with_its_stream(self) -> None:
        # A legacy session lives as long as its stream: the backend forgets it then too.
        h = self.harness_with()
        token = h.token()
        _, done = self.open_stream(h, token)
        h.backend.end_streams()
        h.flush()
        self.successResultOf(done)
        self.assertEqual(self.post(h, token).code, 404)
        self.assertEqual(len(h.proxy.sessions), 0)  # type: ignore[arg-type]

    def test_session_ends_when_the_client_leaves(self) -> None:
        h = self.harness_with()
        token = h.token()
        _, done = self.open_stream(h, token)
        for pump in list(h.client._agent._pumps):  # type: ignore[attr-defined]
            pump.clientIO.loseConnection()
        h.flush()
        self.failureResultOf(done)
        self.assertEqual(self.post(h, token).code, 404)

    def test_open_stream_keeps_its_session_past_the_idle_timeout(self) -> None:
        h = self.harness_with(session_idle_timeout="10m")
        token = h.token(exp=int(h.clock.seconds()) + 7200)
        self.open_stream(h, token)
        h.clock.advance(3600)
        self.assertEqual(self.post(h, token).code, 200)

    def test_repeated_or_encoded_session_parameters_are_checked(self) -> None:
        # The backend may read the last of repeated parameters, or decode an encoded name.
        h = self.harness_with()
        self.open_stream(h, h.token(sub="alice"))
        mallory = h.token(sub="mallory")
        for target in (
            "/messages/?session%5Fid=abc123",
            "/messages/?session_id=abc123&session_id=abc123",
            "/messages/?session_id=&session_id=abc123",
            "/messages/?sessionId=abc123",
            "/messages/?session_id=abc123&sessionId=x",
        ):
            self.assertEqual(self.post(h, mallory, target).code, 404, target)
        self.assertEqual([r.method for r in h.backend.received], ["GET"])

    def test_session_id_parameter_of_other_sdks(self) -> None:
        h = self.harness_with(b"event: endpoint\ndata: /message?sessionId=xyz\n\n")
        self.open_stream(h, h.token(sub="alice"))
        self.assertEqual(self.post(h, h.token(sub="alice"), "/message?sessionId=xyz").code, 200)
        self.assertEqual(self.post(h, h.token(sub="bob"), "/message?sessionId=xyz").code, 404)

    def test_endpoint_without_session_parameter_binds_the_whole_url(self) -> None:
        h = self.harness_with(b"event: endpoint\ndata: /messages/s-9f2c\n\n")
        self.open_stream(h, h.token(sub="alice"))
        self.assertEqual(self.post(h, h.token(sub="alice"), "/messages/s-9f2c").code, 200)
        self.assertEqual(self.post(h, h.token(sub="bob"), "/messages/s-9f2c").code, 404)
        # Only announced message URLs take messages: any other POST could be a session's.
        self.assertEqual(self.post(h, h.token(sub="alice"), "/messages/other").code, 404)

    def test_endpoint_already_bound_to_someone_else_is_not_handed_out(self) -> None:
        # Every stream of this backend announces the same id: the second user's stream is
        # cut before the endpoint event, and the first user keeps the session.
        h = self.harness_with()
        self.open_stream(h, h.token(sub="alice"))
        chunks, done = self.open_stream(h, h.token(sub="bob"))
        self.failureResultOf(done)
        self.assertNotIn(b"abc123", b"".join(chunks))
        self.assertEqual(self.post(h, h.token(sub="bob")).code, 404)
        self.assertEqual(self.post(h, h.token(sub="alice")).code, 200)

    def test_get_of_the_stream_needs_no_session(self) -> None:
        h = self.harness_with()
        self.open_stream(h, h.token())
        self.open_stream(h, h.token())  # the same user may hold two streams of one id

    def test_legacy_session_ids_never_logged(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = self.harness_with(b"event: endpoint\ndata: /messages/?session_id=secret-7f3a\n\n")
        self.open_stream(h, h.token(sub="alice"))
        _, refused = self.open_stream(h, h.token(sub="bob"))  # bound to alice: cut
        self.failureResultOf(refused)
        self.post(h, h.token(sub="mallory"), "/messages/?session_id=secret-7f3a")
        h.backend.end_streams()
        h.flush()
        self.assertTrue(events)
        for event in events:
            self.assertNotIn("secret-7f3a", formatEvent(event))
            self.assertNotIn("secret-7f3a", repr(event))
