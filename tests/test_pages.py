"""The HTML page family: escaping, headers, status codes, accessibility basics, contrast."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from authproxy.http import pages
from authproxy.http.errors import HTMLPageError, render_error
from authproxy.http.pages import (
    ConsentView,
    redirect_target,
    render_consent,
    render_page,
)
from authproxy.http.resource import AsyncResource


def header(request: DummyRequest, name: str) -> str | None:
    values = request.responseHeaders.getRawHeaders(name)
    return values[0] if values else None


class Failing(AsyncResource):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def handle_GET(self, request: Request) -> bytes:
        raise self.error


def view(**kw: Any) -> ConsentView:
    values: dict[str, Any] = dict(
        client_id="cid",
        client_name="Claude Code",
        redirect_uri="http://localhost:33418/callback",
        scopes=("openid", "profile", "email", "offline_access", "files:read"),
        resource="https://mcp.example.com/mcp",
        state="st",
        csrf_token="tok",
    )
    values.update(kw)
    return ConsentView(**values)


class PageTests(SynchronousTestCase):
    def test_render_page_escapes_and_sets_status(self) -> None:
        request = DummyRequest([b""])
        body = render_page(request, "<T>", "m & <b>", "a\"'<i>", 400).decode()
        self.assertEqual(request.responseCode, 400)
        self.assertIn("&lt;T&gt;", body)
        self.assertIn("m &amp; &lt;b&gt;", body)
        self.assertIn("a&quot;&#x27;&lt;i&gt;", body)
        self.assertNotIn("<b>", body)
        self.assertNotIn("<i>", body)
        self.assertIn("Error 400", body)

    def test_security_headers(self) -> None:
        for render in (
            lambda r: render_page(r, "t", "m"),
            lambda r: render_consent(r, view()),
        ):
            request = DummyRequest([b""])
            render(request)
            self.assertEqual(header(request, "X-Frame-Options"), "DENY")
            self.assertEqual(header(request, "Cache-Control"), "no-store")
            self.assertEqual(header(request, "Referrer-Policy"), "no-referrer")
            self.assertEqual(header(request, "X-Content-Type-Options"), "nosniff")
            self.assertEqual(header(request, "Content-Type"), "text/html; charset=utf-8")
            csp = header(request, "Content-Security-Policy") or ""
            for directive in ("default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"):
                self.assertIn(directive, csp)
            self.assertNotIn("unsafe-inline", csp)

    def test_error_page_has_no_form_target(self) -> None:
        request = DummyRequest([b""])
        render_page(request, "t", "m", status=500)
        self.assertIn("form-action 'none'", header(request, "Content-Security-Policy") or "")

    def test_style_hash_matches_inline_style(self) -> None:
        request = DummyRequest([b""])
        body = render_page(request, "t", "m").decode()
        [style] = re.findall(r"<style>(.*?)</style>", body, re.S)
        digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
        self.assertIn(f"'sha256-{digest}'", header(request, "Content-Security-Policy") or "")

    def test_accessibility_basics(self) -> None:
        request = DummyRequest([b""])
        body = render_consent(request, view()).decode()
        self.assertIn('<html lang="en">', body)
        self.assertIn('name="viewport" content="width=device-width, initial-scale=1"', body)
        self.assertIn("@media (prefers-color-scheme: dark)", body)
        self.assertIn(":focus-visible", body)
        self.assertIn("<title>", body)
        self.assertEqual(body.count("<h1"), 1)
        # Real buttons (keyboard operable), each with visible text.
        self.assertRegex(
            body, r'<button type="submit" name="decision" value="approve"[^>]*>Approve<'
        )
        self.assertRegex(body, r'<button type="submit" name="decision" value="deny"[^>]*>Deny<')
        self.assertNotIn("<script", body)
        self.assertNotIn("http://", body.replace("http://localhost", ""))  # no external assets

    def test_consent_page_contents(self) -> None:
        body = render_consent(DummyRequest([b""]), view()).decode()
        self.assertIn("calls itself", body)
        self.assertIn("has not been verified", body)
        self.assertIn("localhost:33418", body)
        self.assertIn("an application on this device", body)
        self.assertIn("https://mcp.example.com/mcp", body)
        self.assertIn("Confirm your identity", body)
        self.assertIn("Stay signed in (refresh tokens)", body)
        self.assertIn("See your email address", body)
        self.assertIn("<code>files:read</code>", body)
        self.assertIn('name="state" value="st"', body)
        self.assertIn('name="csrf_token" value="tok"', body)

    def test_consent_page_without_name(self) -> None:
        body = render_consent(DummyRequest([b""]), view(client_name=None)).decode()
        self.assertIn("did not give its name", body)
        self.assertIn("<code>cid</code>", body)

    def test_consent_page_escapes_everything(self) -> None:
        evil = '"><script>x()</script>'
        body = render_consent(
            DummyRequest([b""]),
            view(
                client_name=evil,
                client_id=evil,
                redirect_uri="https://" + "a.example/" + evil,
                scopes=(evil,),
                resource=evil,
                state=evil,
                csrf_token=evil,
            ),
        ).decode()
        self.assertNotIn("<script>", body)
        self.assertNotIn(evil, body)
        self.assertEqual(body.count("&quot;&gt;&lt;script&gt;x()&lt;/script&gt;"), 6)

    def test_redirect_targets(self) -> None:
        self.assertEqual(redirect_target("https://app.example.com/cb"), ("app.example.com", False))
        self.assertEqual(redirect_target("http://127.0.0.1:9/cb"), ("127.0.0.1:9", True))
        self.assertEqual(redirect_target("http://[::1]:9/cb"), ("[::1]:9", True))
        self.assertEqual(
            redirect_target("cursor://anysphere.cursor/cb"), ("cursor://anysphere.cursor", True)
        )
        self.assertEqual(redirect_target("com.example.app:/cb"), ("com.example.app:", True))

    def test_render_error(self) -> None:
        request = DummyRequest([b""])
        body = render_error(
            request, HTMLPageError(404, "Gone", "It went.", "Start again.")
        ).decode()
        self.assertEqual(request.responseCode, 404)
        self.assertIn("Gone", body)
        self.assertIn("It went.", body)
        self.assertIn("What you can do", body)
        self.assertIn("Start again.", body)

    def test_installed_renderer_used_by_async_resources(self) -> None:
        treq = StubTreq(Failing(HTMLPageError(502, "Sign-in failed", "IdP down.", "Retry.")))
        response = self.successResultOf(treq.get("http://x/"))
        body = self.successResultOf(response.content()).decode()
        self.assertEqual(response.code, 502)
        self.assertIn('<main aria-labelledby="page-title">', body)
        self.assertEqual(response.headers.getRawHeaders("X-Frame-Options"), ["DENY"])

    def test_unexpected_error_shows_no_details(self) -> None:
        treq = StubTreq(Failing(RuntimeError("secret-value-123")))
        response = self.successResultOf(treq.get("http://x/"))
        body = self.successResultOf(response.content())
        self.assertEqual(response.code, 500)
        self.assertNotIn(b"secret-value-123", body)
        self.assertNotIn(b"Traceback", body)
        self.flushLoggedErrors(RuntimeError)


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


class ContrastTests(SynchronousTestCase):
    """WCAG AA: text >= 4.5:1 against what it is drawn on, in light and in dark mode."""

    def palettes(self) -> list[dict[str, str]]:
        light = dict(re.findall(r"--([a-z-]+):(#[0-9a-f]{6})", pages.STYLE.split("@media")[0]))
        dark_block = pages.STYLE.split("@media (prefers-color-scheme: dark)")[1].split("}}")[0]
        dark = {**light, **dict(re.findall(r"--([a-z-]+):(#[0-9a-f]{6})", dark_block))}
        return [light, dark]

    def test_text_contrast(self) -> None:
        pairs = [
            ("text", "card"),
            ("muted", "card"),
            ("text", "bg"),
            ("on-accent", "accent"),
            ("text", "note-bg"),
            ("text", "code-bg"),
        ]
        for palette in self.palettes():
            for fg, bg in pairs:
                ratio = contrast(palette[fg], palette[bg])
                self.assertGreaterEqual(ratio, 4.5, f"{fg} on {bg}: {ratio:.2f}")
            # Focus ring and the secondary button's text are visible against the card (>= 3:1).
            self.assertGreaterEqual(contrast(palette["focus"], palette["card"]), 3.0)
