"""The CORS policies and the form reader, each written once in http/."""

from __future__ import annotations

import io

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from authproxy.http import forms
from authproxy.http.cors import AllowedOriginsCORS, OriginPolicy, PublicCORS
from authproxy.http.errors import BadHeader, OAuthError
from authproxy.http.forms import OAUTH_FORM, OAUTH_REFUSALS, FormReader


def request_with(headers: dict[bytes, bytes], body: bytes = b"", uri: bytes = b"/") -> DummyRequest:
    request = DummyRequest([b""])
    request.uri = uri
    for name, value in headers.items():
        request.requestHeaders.setRawHeaders(name, [value])
    request.content = io.BytesIO(body)
    return request


def header(request: DummyRequest, name: str) -> str | None:
    values = request.responseHeaders.getRawHeaders(name)
    return values[-1] if values else None


class PublicCORSTests(SynchronousTestCase):
    def test_preflight_headers_on_every_response(self) -> None:
        policy = PublicCORS("POST, OPTIONS", "Authorization")
        request = request_with({})
        policy.allow(request)
        self.assertEqual(header(request, "Access-Control-Allow-Origin"), "*")
        self.assertEqual(header(request, "Access-Control-Allow-Methods"), "POST, OPTIONS")
        self.assertEqual(header(request, "Access-Control-Allow-Headers"), "Authorization")
        self.assertEqual(header(request, "Access-Control-Max-Age"), "86400")

    def test_origin_only_on_responses_and_preflight_204(self) -> None:
        policy = PublicCORS("GET, HEAD, OPTIONS", on_every_response=False)
        request = request_with({})
        policy.allow(request)
        self.assertEqual(header(request, "Access-Control-Allow-Origin"), "*")
        self.assertIsNone(header(request, "Access-Control-Allow-Methods"))
        preflight = request_with({})
        self.assertEqual(policy.preflight(preflight), b"")
        self.assertEqual(preflight.responseCode, 204)
        self.assertIsNone(header(preflight, "Access-Control-Allow-Headers"))

    def test_echoes_only_header_names(self) -> None:
        policy = PublicCORS("GET", "Default", echo_request_headers=True)
        asked = request_with({b"access-control-request-headers": b"X-A, X-B"})
        policy.preflight(asked)
        self.assertEqual(header(asked, "Access-Control-Allow-Headers"), "X-A, X-B")
        odd = request_with({b"access-control-request-headers": b"<script>"})
        policy.preflight(odd)
        self.assertEqual(header(odd, "Access-Control-Allow-Headers"), "Default")


class AllowedOriginsCORSTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.policy = AllowedOriginsCORS(
            OriginPolicy.from_config("https://mcp.example", ["https://app.example"]),
            methods="GET, POST",
            allow_headers="Authorization",
            expose_headers="Mcp-Session-Id",
        )

    def test_permits(self) -> None:
        self.assertTrue(self.policy.permits(None))
        self.assertTrue(self.policy.permits(b"https://app.example"))
        self.assertFalse(self.policy.permits(b"https://evil.example"))
        self.assertFalse(self.policy.permits(b"null"))

    def test_echoes_origin_and_varies(self) -> None:
        request = request_with({})
        self.policy.allow(request, b"https://app.example")
        self.policy.preflight_headers(request)
        self.assertEqual(header(request, "Access-Control-Allow-Origin"), "https://app.example")
        self.assertEqual(header(request, "Access-Control-Expose-Headers"), "Mcp-Session-Id")
        self.assertEqual(header(request, "Vary"), "Origin")
        self.assertEqual(header(request, "Access-Control-Max-Age"), "600")


FORM = {b"content-type": b"application/x-www-form-urlencoded"}


class PageRefusal(Exception):
    pass


class PageRefusals:
    """Refusals that name the problem, as the consent page's do."""

    def bad_header(self, error: BadHeader) -> Exception:
        return PageRefusal("header")

    def not_a_form(self) -> Exception:
        return PageRefusal("not a form")

    def in_query(self) -> Exception:
        return PageRefusal("query")

    def too_large(self, limit: int) -> Exception:
        return PageRefusal(f"over {limit}")

    def undecodable(self) -> Exception:
        return PageRefusal("undecodable")

    def repeated(self, name: str) -> Exception:
        return PageRefusal(f"repeated {name}")


class FormReaderTests(SynchronousTestCase):
    def test_reads_fields(self) -> None:
        request = request_with(FORM, b"a=1&b=&c=x%20y")
        self.assertEqual(OAUTH_FORM.read(request), {"a": "1", "b": "", "c": "x y"})

    def test_oauth_refusals(self) -> None:
        cases = [
            (request_with({}, b"a=1"), 400, "invalid_request"),
            (request_with(FORM, b"a=1", uri=b"/t?a=1"), 400, "invalid_request"),
            (request_with(FORM, b"a=1&a=2"), 400, "invalid_request"),
            (request_with(FORM, b"resource=x&resource=y"), 400, "invalid_target"),
            (request_with(FORM, b"a=\xff"), 400, "invalid_request"),
            (request_with(FORM, b"a=" + b"x" * 70_000), 413, "invalid_request"),
        ]
        for request, status, error in cases:
            e = self.assertRaises(OAuthError, OAUTH_FORM.read, request)
            self.assertEqual((e.status, e.error), (status, error))
        bad = request_with({b"content-type": b"\xff"})
        self.assertRaises(BadHeader, OAUTH_FORM.read, bad)

    def test_refusals_are_the_readers(self) -> None:
        reader = FormReader(8, PageRefusals())
        cases = [
            (request_with({b"content-type": b"\xff"}), "header"),
            (request_with({}, b"a=1"), "not a form"),
            (request_with(FORM, b"a=123456789"), "over 8"),
            (request_with(FORM, b"a=\xff"), "undecodable"),
            (request_with(FORM, b"a=1&a=2"), "repeated a"),
        ]
        for request, why in cases:
            e = self.assertRaises(PageRefusal, reader.read, request)
            self.assertEqual(str(e), why)
        # Without body_only, a query string is no reason to refuse.
        self.assertEqual(reader.read(request_with(FORM, b"a=1", uri=b"/?q=1")), {"a": "1"})
        self.assertIs(OAUTH_REFUSALS, OAUTH_FORM.refusals)

    def test_page_refusals_name_the_form(self) -> None:
        reader = FormReader(8, forms.PageRefusals("sample form", PageRefusal))
        cases = [
            (request_with({b"content-type": b"\xff"}), "header is not valid UTF-8"),
            (request_with({}, b"a=1"), "was not sent as form data"),
            (request_with(FORM, b"a=123456789"), "was too large"),
            (request_with(FORM, b"a=\xff"), "could not be decoded"),
            (request_with(FORM, b"a=1&a=2"), "repeated the field a"),
        ]
        for request, why in cases:
            e = self.assertRaises(PageRefusal, reader.read, request)
            self.assertTrue(str(e).startswith("The sample form"), str(e))
            self.assertIn(why, str(e))
