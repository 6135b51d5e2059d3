"""/ready: condition names for everyone, details (file paths, errors) only on loopback.

Readiness details name key files and reload errors; a remote caller (a load balancer, or
anyone on the network) needs only which conditions hold.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from authproxy.http.routing import Readiness, ReadyResource

SECRET_PATH = "/etc/authproxy/keys/key-1.pem: not a PEM private key"


def readiness(keys_ok: bool = False) -> Readiness:
    checks = Readiness()
    checks.register("keys", lambda: (keys_ok, f"reload failed: {SECRET_PATH}"))
    checks.register("upstream", lambda: (True, "discovered https://idp.example.com"))
    return checks


def get_ready(
    client: IAddress, checks: Readiness, headers: dict[bytes, bytes] | None = None
) -> tuple[int, Any]:
    request = DummyRequest([b"ready"])
    request.client = client  # DummyRequest's own ``client`` argument is not kept
    for name, value in (headers or {}).items():
        request.requestHeaders.setRawHeaders(name, [value])
    body = ReadyResource(checks).render_GET(request)
    return request.responseCode or 200, json.loads(body)


class ReadyDetailsTests(SynchronousTestCase):
    def test_remote_peer_sees_names_only(self) -> None:
        for peer in (IPv4Address("TCP", "203.0.113.9", 4000), IPv6Address("TCP", "2001:db8::1", 1)):
            code, body = get_ready(peer, readiness())
            self.assertEqual(code, 503)
            self.assertEqual(body["status"], "not ready")
            self.assertEqual(body["not_ready"], ["keys"])
            self.assertEqual(body["checks"], {"keys": False, "upstream": True})
            self.assertNotIn("/etc/authproxy", json.dumps(body))
            self.assertNotIn("idp.example.com", json.dumps(body))

    def test_loopback_peer_sees_details(self) -> None:
        for peer in (
            IPv4Address("TCP", "127.0.0.1", 4000),
            IPv6Address("TCP", "::1", 4000),
            UNIXAddress(b"/run/authproxy.sock"),
        ):
            code, body = get_ready(peer, readiness())
            self.assertEqual(code, 503)
            self.assertEqual(body["checks"]["keys"], f"reload failed: {SECRET_PATH}")

    def test_forwarded_through_a_local_proxy_is_remote(self) -> None:
        # The TCP peer decides, never X-Forwarded-For; but a loopback peer relaying a request
        # from elsewhere (a reverse proxy on the same host) must not relay the details.
        peer = IPv4Address("TCP", "127.0.0.1", 4000)
        for header in (
            b"X-Forwarded-For",
            b"Forwarded",
            b"X-Real-IP",
            b"True-Client-IP",
            b"X-Client-IP",
        ):
            _, body = get_ready(peer, readiness(), {header: b"127.0.0.1"})
            self.assertNotIn("/etc/authproxy", json.dumps(body), header)
        remote = IPv4Address("TCP", "203.0.113.9", 4000)
        _, body = get_ready(remote, readiness(), {b"X-Forwarded-For": b"127.0.0.1"})
        self.assertNotIn("/etc/authproxy", json.dumps(body))

    def test_ready_is_200(self) -> None:
        code, body = get_ready(IPv4Address("TCP", "203.0.113.9", 4000), readiness(keys_ok=True))
        self.assertEqual(code, 200)
        self.assertEqual(body, {"status": "ready", "checks": {"keys": True, "upstream": True}})
