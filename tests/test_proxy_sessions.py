"""Mcp-Session-Id bound to the user and client that created it (proxy/sessions.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.proxy.sessions import MemorySessionBindings
from authproxy.testing.backend import ProxyHarness, proxy_config
from tests.test_proxy_resource import MCP, RelayTestCase

ALICE = ("alice", "client-a")
BOB = ("bob", "client-a")


class MemorySessionBindingsTests(SynchronousTestCase):
    def table(self, **kwargs: Any) -> tuple[MemorySessionBindings, Clock]:
        clock = Clock()
        options = {"idle_timeout": 60.0, "max_sessions": 100, "max_per_owner": 10, **kwargs}
        return MemorySessionBindings(clock, **options), clock

    def test_only_the_owner_enters(self) -> None:
        table, _ = self.table()
        self.assertTrue(table.bind(b"s", ALICE))
        self.assertTrue(table.enter(b"s", ALICE))
        self.assertFalse(table.enter(b"s", BOB))
        self.assertFalse(table.enter(b"s", ("alice", "client-b")))
        self.assertFalse(table.enter(b"unknown", ALICE))

    def test_never_rebound_to_someone_else(self) -> None:
        table, _ = self.table()
        table.bind(b"s", ALICE)
        self.assertFalse(table.bind(b"s", BOB))
        self.assertTrue(table.enter(b"s", ALICE))

    def test_idle_session_expires_and_use_renews_it(self) -> None:
        table, clock = self.table()
        table.bind(b"s", ALICE)
        clock.advance(59)
        self.assertTrue(table.enter(b"s", ALICE))
        table.leave(b"s")
        clock.advance(59)
        self.assertTrue(table.enter(b"s", ALICE))
        table.leave(b"s")
        clock.advance(60)
        self.assertFalse(table.enter(b"s", ALICE))
        self.assertEqual(len(table), 0)

    def test_request_in_progress_keeps_session_alive(self) -> None:
        table, clock = self.table()
        table.bind(b"s", ALICE)
        self.assertTrue(table.enter(b"s", ALICE))  # an SSE stream, open for hours
        clock.advance(3600)
        self.assertTrue(table.enter(b"s", ALICE))
        table.leave(b"s")
        table.leave(b"s")
        clock.advance(59)
        self.assertTrue(table.enter(b"s", ALICE))

    def test_end_forgets(self) -> None:
        table, _ = self.table()
        table.bind(b"s", ALICE)
        table.end(b"s")
        self.assertFalse(table.enter(b"s", ALICE))
        table.end(b"s")  # twice is fine

    def test_owner_cap_evicts_owners_least_recently_used_idle_session(self) -> None:
        table, _ = self.table(max_per_owner=2)
        table.bind(b"a1", ALICE)
        table.bind(b"a2", ALICE)
        table.bind(b"b1", BOB)
        self.assertTrue(table.enter(b"a1", ALICE))
        table.leave(b"a1")  # a2 is now alice's least recently used
        self.assertTrue(table.bind(b"a3", ALICE))
        self.assertFalse(table.enter(b"a2", ALICE))
        self.assertTrue(table.enter(b"a1", ALICE))
        self.assertTrue(table.enter(b"b1", BOB), "another owner's session is untouched")

    def test_owner_cap_with_every_session_in_use_refuses(self) -> None:
        table, _ = self.table(max_per_owner=1)
        table.bind(b"a1", ALICE)
        table.enter(b"a1", ALICE)
        self.assertFalse(table.bind(b"a2", ALICE))
        table.leave(b"a1")
        self.assertTrue(table.bind(b"a2", ALICE))

    def test_total_cap_evicts_least_recently_used_idle_session(self) -> None:
        table, _ = self.table(max_sessions=2)
        table.bind(b"a1", ALICE)
        table.bind(b"b1", BOB)
        self.assertTrue(table.bind(b"c1", ("carol", "c")))
        self.assertEqual(len(table), 2)
        self.assertFalse(table.enter(b"a1", ALICE))


class SessionBindingThroughProxyTests(RelayTestCase):
    def initialize(self, h: ProxyHarness, token: str, session: bytes = b"session-1") -> None:
        h.backend.session_id = session
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth(token))
        self.assertEqual(response.headers.getRawHeaders("mcp-session-id"), [session.decode()])
        self.body(h, response)

    def send(self, h: ProxyHarness, token: str, session: str, method: str = "POST") -> Any:
        data = b"{}" if method == "POST" else None
        headers = {**h.auth(token), "Mcp-Session-Id": session}
        return self.request(h, method, MCP, data=data, headers=headers)

    def test_creator_uses_its_session(self) -> None:
        h = self.harness()
        self.initialize(h, h.token())
        # A refreshed token (new jti) of the same user and client keeps the session.
        response = self.send(h, h.token(), "session-1")
        self.assertEqual(response.code, 200)
        self.assertEqual(h.backend.last.header("mcp-session-id"), "session-1")

    def test_another_users_token_gets_404(self) -> None:
        h = self.harness()
        self.initialize(h, h.token(sub="alice"))
        received = len(h.backend.received)
        response = self.send(h, h.token(sub="mallory"), "session-1")
        self.assertEqual(response.code, 404)
        self.assertEqual(self.json(h, response)["error"], "session_not_found")
        self.assertEqual(len(h.backend.received), received, "the backend never saw it")

    def test_same_user_other_client_gets_404(self) -> None:
        h = self.harness()
        self.initialize(h, h.token(client_id="client-1"))
        for method in ("POST", "GET", "DELETE"):
            response = self.send(h, h.token(client_id="client-2"), "session-1", method)
            self.assertEqual(response.code, 404, method)

    def test_unknown_session_gets_404_like_a_foreign_one(self) -> None:
        # After a restart the table is empty: refusing makes clients re-initialize, where
        # passing through would let a leaked id work for anyone.
        h = self.harness()
        unknown = self.send(h, h.token(), "never-issued")
        self.initialize(h, h.token(sub="alice"))
        foreign = self.send(h, h.token(sub="mallory"), "session-1")
        self.assertEqual((unknown.code, foreign.code), (404, 404))
        self.assertEqual(self.body(h, unknown), self.body(h, foreign))
        self.assertEqual(h.backend.received[-1].header("mcp-session-id"), None)

    def test_no_token_is_401_before_any_session_check(self) -> None:
        h = self.harness()
        response = self.request(
            h, "POST", MCP, data=b"{}", headers={"Mcp-Session-Id": "never-issued"}
        )
        self.assertEqual(response.code, 401)

    def test_delete_ends_the_binding(self) -> None:
        h = self.harness()
        token = h.token()
        self.initialize(h, token)
        self.assertEqual(self.send(h, token, "session-1", "DELETE").code, 204)
        self.assertEqual(self.send(h, token, "session-1").code, 404)

    def test_backend_404_ends_the_binding(self) -> None:
        h = self.harness()
        token = h.token()
        self.initialize(h, token)
        response = self.request(
            h,
            "POST",
            "https://mcp.example.com/status/404",
            data=b"{}",
            headers={**h.auth(token), "Mcp-Session-Id": "session-1"},
        )
        self.assertEqual(response.code, 404)
        self.assertEqual(len(h.proxy.sessions), 0)  # type: ignore[arg-type]

    def test_session_id_bound_to_someone_else_is_not_handed_out(self) -> None:
        # A backend answering initialize with an id already bound to another user: the
        # second user must not get it (and the first keeps it).
        h = self.harness()
        self.initialize(h, h.token(sub="alice"))
        response = self.request(h, "POST", MCP, data=b"{}", headers=h.auth(h.token(sub="bob")))
        self.assertEqual(response.code, 503)
        self.assertFalse(response.headers.hasHeader("mcp-session-id"))
        self.assertEqual(self.json(h, response)["error"], "too_many_sessions")
        self.assertEqual(self.send(h, h.token(sub="alice"), "session-1").code, 200)

    def test_idle_session_expires(self) -> None:
        h = self.harness(backend={"session_idle_timeout": "10m"})
        token = h.token(exp=int(h.clock.seconds()) + 7200)
        self.initialize(h, token)
        h.clock.advance(599)
        self.assertEqual(self.send(h, token, "session-1").code, 200)
        h.clock.advance(601)
        self.assertEqual(self.send(h, token, "session-1").code, 404)

    def test_legacy_sse_transport_ignores_mcp_session_id(self) -> None:
        # The legacy transport names its session in the message URL (tests/test_proxy_sse.py).
        h = ProxyHarness(proxy_config(backend={"transport": "sse"}))
        token = h.token()
        stream = self.request(h, "GET", "https://mcp.example.com/sse", headers=h.auth(token))
        h.client.collect(stream, lambda _: None)
        h.flush()
        response = self.request(
            h,
            "POST",
            "https://mcp.example.com/messages/?session_id=abc123",
            data=b"{}",
            headers={**h.auth(token), "Mcp-Session-Id": "whatever"},
        )
        self.assertEqual(response.code, 200)

    def test_session_ids_never_logged(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = self.harness()
        h.backend.session_id = b"secret-session-7f3a"
        token = h.token(sub="alice")
        self.request(h, "POST", MCP, data=b"{}", headers=h.auth(token))
        self.send(h, h.token(sub="mallory"), "secret-session-7f3a")
        self.send(h, token, "secret-session-7f3a", "DELETE")
        for event in events:
            self.assertNotIn("secret-session-7f3a", formatEvent(event))
            self.assertNotIn("secret-session-7f3a", repr(event))
