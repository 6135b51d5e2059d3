"""Incremental rewriting of the legacy SSE ``event: endpoint``."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.proxy.sse import EndpointEventRewriter, EndpointURLMapper

STREAM_URL = "http://127.0.0.1:9000/sse"


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
