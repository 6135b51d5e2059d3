"""The one error mapper: each error kind renders as it did before the mapper existed."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from authproxy.http import bounded_channel
from authproxy.http.errors import (
    HTMLPageError,
    JSONError,
    OAuthError,
    ProxyError,
    internal_error,
    method_not_allowed,
    not_found,
    render_error,
    render_error_bytes,
)
from authproxy.proxy.guard import BearerError, Challenge


def headers(request: DummyRequest) -> dict[str, str]:
    return {
        name.decode().lower(): values[-1].decode()
        for name, values in request.responseHeaders.getAllRawHeaders()
    }


class RenderErrorTests(SynchronousTestCase):
    def render(self, error: object) -> tuple[DummyRequest, bytes]:
        request = DummyRequest([b""])
        return request, render_error(request, error)  # type: ignore[arg-type]

    def test_oauth_error_is_json_no_store_with_its_headers(self) -> None:
        error = OAuthError("invalid_client", "unknown", 401, {"WWW-Authenticate": "Basic"})
        request, body = self.render(error)
        self.assertEqual(request.responseCode, 401)
        self.assertEqual(body, b'{"error":"invalid_client","error_description":"unknown"}')
        self.assertEqual(
            headers(request),
            {
                "content-type": "application/json",
                "cache-control": "no-store",
                "pragma": "no-cache",
                "www-authenticate": "Basic",
            },
        )

    def test_router_errors_carry_no_cache_headers(self) -> None:
        request, body = self.render(not_found())
        self.assertEqual(request.responseCode, 404)
        self.assertEqual(json.loads(body)["error"], "not_found")
        self.assertEqual(headers(request), {"content-type": "application/json"})
        request, body = self.render(method_not_allowed(["GET", "POST"], "PUT is not allowed"))
        self.assertEqual(request.responseCode, 405)
        self.assertEqual(headers(request)["allow"], "GET, POST")
        request, body = self.render(internal_error())
        self.assertEqual((request.responseCode, json.loads(body)["error"]), (500, "server_error"))

    def test_proxy_error_with_retry_after(self) -> None:
        request, body = self.render(ProxyError(503, "too_many_sessions", "later", "5"))
        self.assertEqual(request.responseCode, 503)
        self.assertEqual(headers(request)["retry-after"], "5")
        self.assertEqual(headers(request)["pragma"], "no-cache")

    def test_bearer_error_with_challenge(self) -> None:
        challenge = Challenge("https://mcp.example", "https://mcp.example/.well-known/x", ("a",))
        error = challenge.challenge(BearerError(401, None, "an access token is required"))
        request, body = self.render(error)
        self.assertEqual(request.responseCode, 401)
        self.assertEqual(json.loads(body)["error"], "unauthorized")
        self.assertEqual(
            headers(request)["www-authenticate"],
            'Bearer realm="https://mcp.example", '
            'resource_metadata="https://mcp.example/.well-known/x", scope="a"',
        )
        refused = challenge.challenge(BearerError(502, "upstream_error", "failed"))
        request, _ = self.render(refused)
        self.assertNotIn("www-authenticate", headers(request))

    def test_html_page_error_is_a_page_with_its_headers(self) -> None:
        error = HTMLPageError(502, "Sign-in failed", "IdP <down>.", "Retry.", {"Retry-After": "3"})
        request, body = self.render(error)
        self.assertEqual(request.responseCode, 502)
        self.assertIn(b'<main aria-labelledby="page-title">', body)
        self.assertIn(b"IdP &lt;down&gt;.", body)
        found = headers(request)
        self.assertEqual(found["content-type"], "text/html; charset=utf-8")
        self.assertEqual(found["x-frame-options"], "DENY")
        self.assertEqual(found["retry-after"], "3")
        self.assertIn("form-action 'none'", found["content-security-policy"])


class RenderErrorBytesTests(SynchronousTestCase):
    """The raw answers of the connection are the bytes they always were."""

    def test_connection_refusals(self) -> None:
        self.assertEqual(
            bounded_channel.TOO_MANY_CONNECTIONS,
            b"HTTP/1.1 503 Service Unavailable\r\n"
            b"Content-Type: application/json\r\n"
            b"Cache-Control: no-store\r\n"
            b"Retry-After: 5\r\n"
            b"Connection: close\r\n"
            b"Content-Length: 92\r\n\r\n"
            b'{"error":"too_many_connections","error_description":'
            b'"too many connections; try again later"}',
        )
        self.assertTrue(bounded_channel.URI_TOO_LONG.startswith(b"HTTP/1.1 414 URI Too Long\r\n"))
        self.assertTrue(
            bounded_channel.HEADERS_TOO_LARGE.startswith(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            )
        )

    def test_content_too_large(self) -> None:
        error = JSONError(413, "request_too_large", "too big", {"Cache-Control": "no-store"})
        raw = render_error_bytes(error)
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertEqual(
            head.split(b"\r\n"),
            [
                b"HTTP/1.1 413 Content Too Large",
                b"Content-Type: application/json",
                b"Cache-Control: no-store",
                b"Connection: close",
                b"Content-Length: %d" % len(body),
            ],
        )
        self.assertEqual(json.loads(body)["error"], "request_too_large")
