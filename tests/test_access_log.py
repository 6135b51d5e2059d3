"""The access log: fields, no secrets, batched writes, request ids, client-closed streams."""

from __future__ import annotations

import io
import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from authproxy.http.request_id import RequestIds
from authproxy.http.responses import TrustedProxies
from authproxy.ops.access_log import MAX_BUFFERED, AccessLog


def finished_request(path: bytes = b"/mcp", peer: str = "192.0.2.7") -> DummyRequest:
    request = DummyRequest([path.lstrip(b"/")])
    request.method = b"POST"
    request.uri = path + b"?code=SECRETCODE&state=abc"
    request.path = path
    request.clientproto = b"HTTP/1.1"
    request.client = IPv4Address("TCP", peer, 40000)
    request.code = 200
    request.sentLength = 12
    request.requestHeaders.addRawHeader(b"user-agent", b"mcp-client/1.0")
    request.requestHeaders.addRawHeader(b"mcp-session-id", b"SECRETSESSION")
    request.requestHeaders.addRawHeader(b"cookie", b"authproxy-consent-x=SECRETCOOKIE")
    request.requestHeaders.addRawHeader(b"authorization", b"Bearer SECRETTOKEN")
    request.request_id = b"abc-1"  # type: ignore[attr-defined]
    request.route = "proxy"  # type: ignore[attr-defined]
    request.client_id = "client-1"  # type: ignore[attr-defined]
    return request


class AccessLogTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.out = io.StringIO()

    def log(self, fmt: str, **kwargs: Any) -> AccessLog:
        return AccessLog(self.clock, fmt, out=lambda: self.out, **kwargs)

    def test_json_fields(self) -> None:
        access = self.log("json")
        access.record(finished_request(), 0.0125)
        access.flush()
        record = json.loads(self.out.getvalue())
        self.assertEqual(
            {k: record[k] for k in ("method", "route", "path", "status", "bytes", "client")},
            {
                "method": "POST",
                "route": "proxy",
                "path": "/mcp",
                "status": 200,
                "bytes": 12,
                "client": "192.0.2.7",
            },
        )
        self.assertEqual(record["duration"], 0.0125)
        self.assertEqual(record["user_agent"], "mcp-client/1.0")
        self.assertEqual(record["request_id"], "abc-1")
        self.assertEqual(record["client_id"], "client-1")
        self.assertEqual(record["timestamp"], "2023-11-14T22:13:20+0000")
        self.assertNotIn("ended", record)

    def test_no_query_or_secrets_in_either_format(self) -> None:
        for fmt in ("text", "json"):
            self.out = io.StringIO()
            access = self.log(fmt)
            access.record(finished_request(), 0.001)
            access.flush()
            line = self.out.getvalue()
            self.assertIn("/mcp", line)
            for secret in ("SECRETCODE", "SECRETSESSION", "SECRETCOOKIE", "SECRETTOKEN"):
                self.assertNotIn(secret, line)

    def test_text_line(self) -> None:
        access = self.log("text")
        access.record(finished_request(), 0.25, client_closed=True)
        access.flush()
        line = self.out.getvalue()
        self.assertIn('"POST /mcp HTTP/1.1" 200 12 "mcp-client/1.0" 0.250 abc-1 client-1', line)
        self.assertIn("[14/Nov/2023:22:13:20 +0000]", line)
        self.assertTrue(line.endswith(" client-closed\n"))

    def hostile_request(self) -> DummyRequest:
        request = finished_request(path=b'/m"c\\p\xff\xe9')
        request.requestHeaders.setRawHeaders(b"user-agent", [b'agent "x"\\ \x01 \xc3\xa9'])
        request.client_id = 'https://c.example/"id"'  # type: ignore[attr-defined]
        return request

    def test_json_escapes_whatever_the_client_sent(self) -> None:
        access = self.log("json")
        for _ in range(2):  # escaped once, then from the cache: the same line
            access.record(self.hostile_request(), None, client_closed=True)
        access.flush()
        first, second = self.out.getvalue().splitlines()
        self.assertEqual(first, second)
        self.assertTrue(first.isascii())
        record = json.loads(first)
        self.assertEqual(record["path"], '/m"c\\p\ufffd\ufffd')
        self.assertEqual(record["user_agent"], 'agent "x"\\ \x01 \u00e9')
        self.assertEqual(record["client_id"], 'https://c.example/"id"')
        self.assertEqual((record["duration"], record["ended"]), (None, "client"))

    def test_text_escapes_whatever_the_client_sent(self) -> None:
        access = self.log("text")
        access.record(self.hostile_request(), 0.5)
        access.flush()
        line = self.out.getvalue()
        self.assertIn('"POST /m\\"c\\\\p\\xff\\xe9 HTTP/1.1"', line)
        self.assertIn('"agent \\"x\\"\\\\ \\x01 \\xc3\\xa9"', line)
        self.assertTrue(line.endswith(' https://c.example/\\"id\\"\n'), line)

    def test_escapes_remembered_are_bounded(self) -> None:
        access = self.log("text")
        for n in range(3000):
            request = finished_request()
            request.requestHeaders.setRawHeaders(b"user-agent", [b"agent/%d" % n])
            access.record(request, 0.001)
        access.record(finished_request(path=b"/" + b"x" * 300), 0.001)
        self.assertLessEqual(len(access._escapes), 1024)
        self.assertNotIn(b"/" + b"x" * 300, access._escapes)
        access.flush()
        self.assertIn('"agent/2999"', self.out.getvalue())

    def test_lines_written_in_batches_on_a_timer(self) -> None:
        access = self.log("json", flush_interval=0.25)
        access.record(finished_request(), 0.001)
        access.record(finished_request(), 0.001)
        self.assertEqual(self.out.getvalue(), "")
        self.clock.advance(0.25)
        self.assertEqual(len(self.out.getvalue().splitlines()), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_full_buffer_is_written_at_once(self) -> None:
        access = self.log("json")
        for _ in range(MAX_BUFFERED):
            access.record(finished_request(), 0.001)
        self.assertEqual(len(self.out.getvalue().splitlines()), MAX_BUFFERED)

    def test_stopping_writes_what_is_left(self) -> None:
        access = self.log("text")
        access.startService()
        access.record(finished_request(), 0.001)
        access.stopService()
        self.assertEqual(len(self.out.getvalue().splitlines()), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_client_behind_a_trusted_proxy(self) -> None:
        access = self.log("json", trusted=TrustedProxies.from_cidrs(["10.0.0.0/8"]))
        request = finished_request(peer="10.1.2.3")
        request.requestHeaders.addRawHeader(b"x-forwarded-for", b"198.51.100.9")
        access.record(request, 0.001)
        access.flush()
        self.assertEqual(json.loads(self.out.getvalue())["client"], "198.51.100.9")

    def test_forged_forwarded_for_cannot_forge_text_fields(self) -> None:
        access = self.log("text", trusted=TrustedProxies.from_cidrs(["10.0.0.0/8"]))
        request = finished_request(peer="10.1.2.3")
        request.requestHeaders.addRawHeader(b"x-forwarded-for", b'1.2.3.4" - - [forged] "GET')
        access.record(request, 0.001)
        access.flush()
        line = self.out.getvalue()
        self.assertNotIn("forged", line)
        self.assertIn('"10.1.2.3" - - [', line)  # the proxy that sent it, not the claim
        self.assertEqual(line.count('"'), 6)  # client, request line, user agent


class RequestIdTests(SynchronousTestCase):
    def request(self, peer: str, sent: bytes | None) -> DummyRequest:
        request = DummyRequest([b""])
        request.client = IPv4Address("TCP", peer, 40000)
        if sent is not None:
            request.requestHeaders.addRawHeader(b"x-request-id", sent)
        return request

    def test_generated_ids_are_distinct(self) -> None:
        ids = RequestIds()
        first, second = (
            ids.assign(self.request("192.0.2.1", None)),
            ids.assign(self.request("192.0.2.1", None)),
        )
        self.assertNotEqual(first, second)
        self.assertEqual(first.split(b"-")[0], second.split(b"-")[0])

    def test_taken_only_from_trusted_proxies(self) -> None:
        ids = RequestIds(TrustedProxies.from_cidrs(["10.0.0.0/8"]))
        self.assertEqual(ids.assign(self.request("10.0.0.1", b"from-proxy")), b"from-proxy")
        self.assertNotEqual(ids.assign(self.request("192.0.2.1", b"chosen")), b"chosen")

    def test_unusable_id_replaced(self) -> None:
        ids = RequestIds(TrustedProxies.from_cidrs(["10.0.0.0/8"]))
        for bad in (b'has "quotes"', b"x" * 200, b"sp ace"):
            self.assertNotEqual(ids.assign(self.request("10.0.0.1", bad)), bad)
