"""Hostile input gets a clear 4xx, never a 500: deeply nested JSON in bodies and tokens."""

from __future__ import annotations

import base64

from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.backend import ProxyHarness
from authproxy.testing.upstream import AuthServerHarness


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


NESTED_TOKEN = b64(b"[" * 9000) + "." + b64(b"{}") + ".sig"


class NestedJSONTests(SynchronousTestCase):
    def test_register_body(self) -> None:
        h = AuthServerHarness()
        result = h.request(
            "POST",
            "/oauth/register",
            data=b"[" * 60000,
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(result.code, 400)
        self.assertEqual(result.json()["error"], "invalid_client_metadata")

    def test_revoke_token(self) -> None:
        h = AuthServerHarness()
        client = h.register()
        result = h.post_form(
            "/oauth/revoke", {"client_id": client["client_id"], "token": NESTED_TOKEN}
        )
        self.assertEqual(result.code, 200)  # RFC 7009: unknown tokens answer 200

    def test_guard_token(self) -> None:
        h = ProxyHarness()
        d = h.client.post(
            h.resource, data=b"{}", headers={"Authorization": "Bearer " + NESTED_TOKEN}
        )
        h.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 401)
        self.assertIn(
            'error="invalid_token"', response.headers.getRawHeaders("www-authenticate")[0]
        )
