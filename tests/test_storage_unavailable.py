"""Storage down: fast StorageUnavailable, one 503 rendering, and a proxy path that keeps flowing.

Unit tests with fakes; tests/test_redis_wiring.py stops and restarts a real redis-server.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from txredisapi import ConnectionError, ResponseError, TimeoutError

from authproxy.http.resource import AsyncResource
from authproxy.storage.redis.link import RedisCommands, RedisLink
from authproxy.storage.unavailable import StorageUnavailable
from authproxy.testing.backend import ProxyHarness

MCP = "https://mcp.example.com/mcp"


class FakeHandler:
    """A txredisapi handler whose every command answers ``outcome``."""

    def __init__(self) -> None:
        self.outcome: Any = "OK"
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def get(self, *args: Any) -> Deferred[Any]:
        self.sent.append(("get", args))
        if isinstance(self.outcome, Exception):
            return fail(self.outcome)
        return succeed(self.outcome)


class RedisCommandsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.handler = FakeHandler()
        self.up = True
        self.commands = RedisCommands(self.handler, lambda: self.up)

    def test_passes_replies_through_while_up(self) -> None:
        self.assertEqual(self.successResultOf(self.commands.get("k")), "OK")
        self.assertEqual(self.handler.sent, [("get", ("k",))])

    def test_refuses_at_once_while_down_without_sending(self) -> None:
        self.up = False
        failure = self.failureResultOf(self.commands.get("k"), StorageUnavailable)
        self.assertEqual(str(failure.value), "Redis is unreachable")
        self.assertEqual(self.handler.sent, [])

    def test_connection_errors_become_unavailable(self) -> None:
        for error, message in [
            (ConnectionError("Lost connection"), "the connection to Redis was lost"),
            (TimeoutError("Not received Redis response in 3 seconds"), "did not answer in time"),
            (ResponseError("LOADING Redis is loading"), "for now (LOADING)"),
            (ResponseError("READONLY You can't write against a replica"), "(READONLY)"),
        ]:
            self.handler.outcome = error
            failure = self.failureResultOf(self.commands.get("k"), StorageUnavailable)
            self.assertIn(message, str(failure.value))

    def test_other_errors_stay_what_they_are(self) -> None:
        self.handler.outcome = ResponseError("ERR wrong number of arguments")
        self.failureResultOf(self.commands.get("k"), ResponseError)

    def test_readonly_reports_a_demoted_master(self) -> None:
        demoted: list[bool] = []
        commands = RedisCommands(self.handler, lambda: True, lambda: demoted.append(True))
        self.handler.outcome = ResponseError("LOADING Redis is loading")
        self.failureResultOf(commands.get("k"), StorageUnavailable)
        self.assertEqual(demoted, [])
        self.handler.outcome = ResponseError("READONLY You can't write against a replica")
        self.failureResultOf(commands.get("k"), StorageUnavailable)
        self.assertEqual(demoted, [True])


class RedisLinkTests(SynchronousTestCase):
    def test_not_started_is_not_ready_and_refuses(self) -> None:
        from twisted.internet.task import Clock

        link = RedisLink(object(), Clock(), describe="redis://127.0.0.1:1/0")
        self.assertEqual(link.readiness(), (False, "not connected to redis://127.0.0.1:1/0"))
        self.failureResultOf(link.commands.get("k"), StorageUnavailable)

    def test_demoted_master_connection_is_dropped_once(self) -> None:
        from twisted.internet.task import Clock

        link = RedisLink(object(), Clock(), describe="redis://127.0.0.1:1/0")
        connection = FakeConnection()
        link.factory.pool.append(connection)
        link._demoted()
        link._demoted()  # a second READONLY while it closes changes nothing
        self.assertTrue(connection.transport.disconnecting)
        self.assertEqual(connection.transport.losses, 1)


class FakeConnection:
    """A pooled txredisapi connection: only its transport matters here."""

    def __init__(self) -> None:
        self.transport = CountingTransport()


class CountingTransport:
    def __init__(self) -> None:
        self.disconnecting = False
        self.losses = 0

    def loseConnection(self) -> None:
        self.disconnecting = True
        self.losses += 1


class NeedsStorage(AsyncResource):
    async def handle_GET(self, request: Request) -> bytes:
        raise StorageUnavailable("the connection to Redis was lost", retry_after=7)


class BrowserNeedsStorage(NeedsStorage):
    for_browsers = True


class RenderingTests(SynchronousTestCase):
    def get(self, resource: AsyncResource) -> tuple[Any, bytes]:
        client = StubTreq(resource)
        response = self.successResultOf(client.get("http://127.0.0.1/x"))
        return response, self.successResultOf(response.content())

    def test_api_endpoint_answers_oauth_503_with_retry_after(self) -> None:
        response, body = self.get(NeedsStorage())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["7"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-store"])
        document = json.loads(body)
        self.assertEqual(document["error"], "temporarily_unavailable")
        self.assertIn("storage", document["error_description"])
        self.assertNotIn(b"Redis", body)  # what failed inside stays in the log

    def test_browser_endpoint_answers_a_page(self) -> None:
        response, body = self.get(BrowserNeedsStorage())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["7"])
        self.assertIn(b"text/html", response.headers.getRawHeaders("content-type")[0].encode())
        self.assertIn(b"Temporarily unavailable", body)


class ProxyWhileStorageDownTests(SynchronousTestCase):
    """The guard's cache and the upstream token cache need no storage: traffic flows."""

    def setUp(self) -> None:
        self.h = ProxyHarness()
        self.down = False
        revocations = self.h.storage.revocations
        real_check = revocations.is_jti_revoked

        def is_jti_revoked(jti: str) -> Deferred[bool]:
            if self.down:
                return fail(StorageUnavailable("Redis is unreachable"))
            return real_check(jti)

        revocations.is_jti_revoked = is_jti_revoked  # type: ignore[method-assign]

    def post(self, token: str) -> tuple[int, Any]:
        d = self.h.client.post(MCP, data=b"{}", headers={"Authorization": f"Bearer {token}"})
        self.h.flush()
        response = self.successResultOf(d)
        return response, self.successResultOf(response.content())

    def test_verified_token_keeps_flowing_new_token_gets_503(self) -> None:
        verified = self.h.token()
        self.assertEqual(self.post(verified)[0].code, 200)
        self.down = True
        self.assertEqual(self.post(verified)[0].code, 200)
        response, body = self.post(self.h.token())
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        self.assertEqual(json.loads(body)["error"], "temporarily_unavailable")
        self.assertEqual(len(self.h.backend.received), 2)
