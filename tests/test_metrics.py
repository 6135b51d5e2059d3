"""/metrics: request counts by route (never raw paths or queries), key ring and readiness."""

from __future__ import annotations

import io
from typing import Any

import treq
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from authproxy.application import build_application
from authproxy.config import config_from_mapping


class MetricsTests(TestCase):
    @inlineCallbacks
    def test_requests_counted_by_route(self) -> Any:
        config = config_from_mapping(
            {
                "server": {"public_url": "http://127.0.0.1:8080"},
                "backend": {"url": "http://127.0.0.1:9"},
                "upstream": {"type": "development"},
            }
        )
        app = build_application(config, reactor)
        out = io.StringIO()
        assert app.site.access_log is not None
        app.site.access_log.out = lambda: out
        port: Any = reactor.listenTCP(0, app.site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        request_ids = []
        for path in ("/health", "/health", "/oauth/token?code=SECRET", "/some/unguarded/path"):
            response = yield treq.get(base + path, persistent=False)
            request_ids.append(response.headers.getRawHeaders(b"x-request-id")[0])
            yield treq.content(response)
        self.assertEqual(len(set(request_ids)), 4)
        response = yield treq.get(base + "/metrics", persistent=False)
        text = (yield treq.text_content(response)).replace("\r", "")
        self.assertEqual(response.code, 200)
        self.assertIn(
            'authproxy_http_requests_total{code="200",method="GET",route="/health"} 2.0', text
        )
        self.assertIn('route="/oauth/token"', text)
        self.assertIn('route="proxy"', text)
        self.assertNotIn("SECRET", text)
        self.assertNotIn("unguarded", text)
        self.assertIn("authproxy_key_ring_generation", text)
        self.assertIn('authproxy_ready{check="keys"} 1.0', text)
        # Process metrics, key reloads, backend connections, and the guard's refusal.
        self.assertIn("process_cpu_seconds_total", text)
        self.assertIn("authproxy_key_reload_ok 1.0", text)
        self.assertIn("authproxy_backend_connections 0.0", text)
        self.assertIn('authproxy_guard_refusals_total{reason="missing_token"} 1.0', text)
        # One access line per request, with the path but never the query.
        app.site.access_log.flush()
        access = out.getvalue().splitlines()
        self.assertEqual(len(access), 5)
        self.assertIn('"GET /oauth/token HTTP/1.1" 405', access[2])
        self.assertIn(request_ids[2].decode(), access[2])
        self.assertFalse(any("SECRET" in line for line in access))
        yield app.root.fallback.close()  # type: ignore[attr-defined]

    @inlineCallbacks
    def test_metrics_listen_serves_metrics_there_only(self) -> Any:
        config = config_from_mapping(
            {
                "server": {
                    "public_url": "http://127.0.0.1:8080",
                    "metrics_listen": "tcp:0:interface=127.0.0.1",
                },
                "backend": {"url": "http://127.0.0.1:9"},
                "upstream": {"type": "development"},
            }
        )
        app = build_application(config, reactor)
        assert app.metrics_site is not None and app.site.access_log is not None
        app.site.access_log.out = io.StringIO
        main = f"http://127.0.0.1:{self.listen(app.site)}"
        metrics = f"http://127.0.0.1:{self.listen(app.metrics_site)}"
        response = yield treq.get(main + "/metrics", persistent=False)
        self.assertEqual(response.code, 404)
        self.assertEqual((yield treq.json_content(response))["error"], "not_found")
        response = yield treq.get(metrics + "/metrics", persistent=False)
        self.assertEqual(response.code, 200)
        text = yield treq.text_content(response)
        # the 404 above was counted by the main Site, and is shown here
        self.assertIn(
            'authproxy_http_requests_total{code="404",method="GET",route="/metrics"}', text
        )
        response = yield treq.get(metrics + "/health", persistent=False)
        self.assertEqual(response.code, 404)
        yield treq.content(response)
        app.site.access_log.flush()
        yield app.root.fallback.close()  # type: ignore[attr-defined]

    def listen(self, site: Any) -> int:
        port: Any = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        return int(port.getHost().port)
