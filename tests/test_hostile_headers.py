"""Undecodable header bytes and odd claims get a clear 4xx, never a 500 or a traceback.

Twisted decodes a header as UTF-8 when it is asked for by a ``str`` name, and raises on bytes
that are not UTF-8; every such read now goes through ``httputil.header_text``, which answers
400 naming the header instead.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.backend import ProxyHarness
from authproxy.testing.upstream import AuthServerHarness

BAD = b"\xff\xfe\xc3("  # not UTF-8


class FailureCapture:
    """Every logged traceback (an event carrying ``log_failure``) while a test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.failures: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.observe)
        case.addCleanup(globalLogPublisher.removeObserver, self.observe)

    def observe(self, event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            self.failures.append(event)


class AuthServerHeaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = AuthServerHarness({"auth_server": {"consent": "always"}})
        self.client = self.h.register()
        self.failures = FailureCapture(self)

    def send(self, method: str, path: str, headers: dict[bytes, bytes], body: bytes = b"") -> Any:
        d = self.h._treq.request(
            method,
            self.h.base + path,
            headers={k: [v] for k, v in headers.items()},
            data=body or None,
        )
        response = self.h._wait(d)
        content = self.h._wait(response.content())
        return response, content

    def assertRefused(self, response: Any, content: bytes, *codes: int) -> None:
        self.assertIn(response.code, codes or (400,), content)
        self.assertEqual(self.failures.failures, [])

    def test_content_type(self) -> None:
        form = (
            b"grant_type=refresh_token&refresh_token=x&client_id="
            + self.client["client_id"].encode()
        )
        for path in ("/oauth/token", "/oauth/revoke", "/oauth/register", "/oauth/consent"):
            response, content = self.send(
                "POST", path, {b"Content-Type": b"application/x-www-form-urlencoded" + BAD}, form
            )
            self.assertRefused(response, content, 400)
            self.assertIn(b"Content-Type", content, path)

    def test_authorization(self) -> None:
        form = b"token=x&client_id=" + self.client["client_id"].encode()
        for path in ("/oauth/token", "/oauth/revoke"):
            response, content = self.send(
                "POST",
                path,
                {
                    b"Content-Type": b"application/x-www-form-urlencoded",
                    b"Authorization": b"Basic " + BAD,
                },
                form,
            )
            self.assertRefused(response, content, 400)
            self.assertIn(b"Authorization", content, path)

    def test_origin_on_consent(self) -> None:
        response, content = self.send(
            "POST",
            "/oauth/consent",
            {b"Content-Type": b"application/x-www-form-urlencoded", b"Origin": BAD},
            b"state=x&csrf_token=y&decision=approve",
        )
        self.assertRefused(response, content, 400, 403)


class ProxyHeaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.h = ProxyHarness()
        self.failures = FailureCapture(self)

    def send(self, method: str, url: str, headers: dict[bytes, bytes]) -> tuple[int, bytes]:
        d = self.h.client.request(method, url, headers={k: [v] for k, v in headers.items()})
        self.h.flush()
        response = self.successResultOf(d)
        body = self.h.client.content(response)
        self.h.flush()
        return response.code, self.successResultOf(body)

    def test_access_control_request_headers_on_metadata(self) -> None:
        url = self.h.public_url + "/.well-known/oauth-protected-resource/mcp"
        code, body = self.send("OPTIONS", url, {b"Access-Control-Request-Headers": BAD})
        self.assertEqual(code, 400, body)
        self.assertIn(b"Access-Control-Request-Headers", body)
        self.assertEqual(self.failures.failures, [])

    def test_authorization_and_origin_on_the_mcp_path(self) -> None:
        for headers in (
            {b"Authorization": b"Bearer " + BAD},
            {b"Authorization": BAD},
            {b"Origin": BAD, **{b"Authorization": self.h.auth()["Authorization"].encode()}},
        ):
            code, body = self.send("POST", self.h.resource, headers)
            self.assertIn(code, (400, 401, 403), (headers, body))
        self.assertEqual(self.failures.failures, [])

    def test_audience_list_holding_an_object(self) -> None:
        for aud in ([{}], [{"a": 1}, self.h.resource], [[]], {"x": 1}, 5, None):
            d = self.h.client.post(
                self.h.resource, data=b"{}", headers=self.h.auth(self.h.token(aud=aud))
            )
            self.h.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 401, aud)
            challenge = response.headers.getRawHeaders("www-authenticate")[0]
            self.assertIn('error="invalid_token"', challenge)
        self.assertEqual(self.failures.failures, [])

    def test_expiry_out_of_range(self) -> None:
        for exp in (10**400, float("inf"), float("nan"), "1", True):
            d = self.h.client.post(
                self.h.resource, data=b"{}", headers=self.h.auth(self.h.token(exp=exp))
            )
            self.h.flush()
            self.assertEqual(self.successResultOf(d).code, 401, exp)
        self.assertEqual(self.failures.failures, [])


class UnknownMethodTests(SynchronousTestCase):
    def test_put_on_a_plain_resource_is_405_not_501(self) -> None:
        # Found by the fuzz test: Twisted answers methods it does not know with 501.
        h = ProxyHarness()
        failures = FailureCapture(self)
        url = h.public_url + "/.well-known/oauth-protected-resource/mcp"
        for method in ("PUT", "PATCH", "BREW"):
            d = h.client.request(method, url)
            h.flush()
            response = self.successResultOf(d)
            self.assertEqual(response.code, 405, method)
            self.assertIn("GET", response.headers.getRawHeaders("allow")[0])
        self.assertEqual(failures.failures, [])
