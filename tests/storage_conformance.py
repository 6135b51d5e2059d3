"""One conformance suite per storage interface, for every storage implementation.

Each ``<Concern>Conformance`` mixin tests one interface through its ``make_<concern>(clock,
**limits)`` hook; ``StorageConformance`` tests what spans concerns (a family revocation
deny-lists, a full deny list refuses issuance, a sweep) on a whole ``Storage``. Mix each into
a ``SynchronousTestCase`` (or ``TestCase``) and implement ``make_storage(clock, **limits)``:
the ``make_<concern>`` hooks default to that storage's concern, and a backend may override
them one by one. ``limits`` are ``memory_storage``'s keyword arguments (caps and
``unused_client_ttl``), which a backend applies or, when it cannot, skips the test.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from authproxy.storage import Storage, StorageFull
from authproxy.storage.clients import IClients
from authproxy.storage.codes import IAuthorizationCodes
from authproxy.storage.families import ITokenFamilies
from authproxy.storage.logins import ILogins
from authproxy.storage.models import (
    AuthorizationCode,
    PendingAuthorization,
    RefreshToken,
    RegisteredClient,
    TokenFamily,
    UpstreamTokenSession,
)
from authproxy.storage.rates import IRateCounters
from authproxy.storage.revocations import IRevocations
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.storage.users import IUsers

START = 1_700_000_000.0


def make_client(
    client_id: str = "client-1", created_at: float = START, **kw: Any
) -> RegisteredClient:
    values: dict[str, Any] = dict(
        client_id=client_id,
        redirect_uris=("http://127.0.0.1/callback",),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        scopes=("openid",),
        client_name="Test client",
        token_endpoint_auth_method="none",
        created_at=created_at,
        extra_metadata={"logo_uri": "https://example.com/logo.png", "contacts": ["a@b.c"]},
    )
    values.update(kw)
    return RegisteredClient(**values)


def make_pending(
    state: str = "state-1", lifespan: float = 600.0, **kw: Any
) -> PendingAuthorization:
    values: dict[str, Any] = dict(
        state=state,
        client_id="client-1",
        redirect_uri="http://127.0.0.1/callback",
        client_state="xyz",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        scopes=("openid",),
        resource="https://mcp.example.com/mcp",
        created_at=START,
        expires_at=START + lifespan,
    )
    values.update(kw)
    return PendingAuthorization(**values)


def make_code(code_id: str = "code-1", lifespan: float = 60.0, **kw: Any) -> AuthorizationCode:
    values: dict[str, Any] = dict(
        code_id=code_id,
        client_id="client-1",
        redirect_uri="http://127.0.0.1/callback",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        scopes=("openid",),
        resource="https://mcp.example.com/mcp",
        user_id="user-1",
        tsid="tsid-1",
        created_at=START,
        expires_at=START + lifespan,
    )
    values.update(kw)
    return AuthorizationCode(**values)


def make_family(family_id: str = "family-1", lifespan: float = 86400.0, **kw: Any) -> TokenFamily:
    values: dict[str, Any] = dict(
        family_id=family_id,
        client_id="client-1",
        user_id="user-1",
        tsid="tsid-1",
        expires_at=START + lifespan,
    )
    values.update(kw)
    return TokenFamily(**values)


def make_refresh_token(
    token_id: str = "rt-1", lifespan: float = 86400.0, **kw: Any
) -> RefreshToken:
    values: dict[str, Any] = dict(
        token_id=token_id,
        family_id="family-1",
        client_id="client-1",
        user_id="user-1",
        scopes=("openid",),
        resource="https://mcp.example.com/mcp",
        tsid="tsid-1",
        created_at=START,
        expires_at=START + lifespan,
    )
    values.update(kw)
    return RefreshToken(**values)


def make_session(
    tsid: str = "tsid-1", lifespan: float = 86400.0, **kw: Any
) -> UpstreamTokenSession:
    values: dict[str, Any] = dict(
        tsid=tsid,
        upstream_name="idp",
        access_token="upstream-access",
        refresh_token="upstream-refresh",
        access_token_expires_at=START + 3600,
        expires_at=START + lifespan,
        subject="alice",
        claims={"groups": ["admins"], "email": "alice@example.com"},
    )
    values.update(kw)
    return UpstreamTokenSession(**values)


class ConformanceBase:
    """A clock at START and the storage under test. Needs a trial TestCase in the bases."""

    # provided by the TestCase this is mixed into
    successResultOf: Any
    failureResultOf: Any
    assertEqual: Any
    assertIs: Any
    assertIsNone: Any
    assertTrue: Any
    assertFalse: Any
    assertNotEqual: Any
    assertGreater: Any
    assertAlmostEqual: Any

    def make_storage(self, clock: Clock, **limits: Any) -> Storage:
        """Build the backend under test, reading time from ``clock``."""
        raise NotImplementedError

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self._upkeep: dict[int, Any] = {}

    def concern(self, name: str, clock: Clock, **limits: Any) -> Any:
        """One concern of a new storage; its upkeep is remembered for :meth:`sweep`."""
        storage = self.make_storage(clock, **limits)
        found = getattr(storage, name)
        self._upkeep[id(found)] = storage.upkeep
        return found

    def sweep(self, store: Any) -> None:
        """Run the sweep of the storage ``store`` (a concern or a Storage) belongs to."""
        upkeep = store.upkeep if isinstance(store, Storage) else self._upkeep.get(id(store))
        if upkeep is not None:
            self.successResultOf(upkeep.sweep())

    def assertIsNotNoneResult(self, d: Any) -> Any:
        """The Deferred has fired with something other than None."""
        result = self.successResultOf(d)
        self.assertFalse(result is None, "expected a record, got None")
        return result


class ClientsConformance(ConformanceBase):
    """The IClients contract."""

    def make_clients(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("clients", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.clients = self.make_clients(self.clock)

    def test_provides_iclients(self) -> None:
        self.assertTrue(verifyObject(IClients, self.clients))

    def test_client_get_after_add(self) -> None:
        client = make_client()
        self.assertIsNone(self.successResultOf(self.clients.add_client(client)))
        self.assertEqual(self.successResultOf(self.clients.get_client("client-1")), client)

    def test_client_unknown(self) -> None:
        self.assertIsNone(self.successResultOf(self.clients.get_client("nope")))

    def test_client_copy_in(self) -> None:
        client = make_client()
        self.successResultOf(self.clients.add_client(client))
        client.extra_metadata["logo_uri"] = "https://evil.example/"
        stored = self.successResultOf(self.clients.get_client("client-1"))
        self.assertEqual(stored.extra_metadata["logo_uri"], "https://example.com/logo.png")

    def test_client_copy_out(self) -> None:
        self.successResultOf(self.clients.add_client(make_client()))
        got = self.successResultOf(self.clients.get_client("client-1"))
        got.extra_metadata["contacts"].append("evil@example.com")
        got.extra_metadata["new"] = 1
        again = self.successResultOf(self.clients.get_client("client-1"))
        self.assertEqual(
            again.extra_metadata,
            {"logo_uri": "https://example.com/logo.png", "contacts": ["a@b.c"]},
        )

    def test_client_expires_unused(self) -> None:
        clients = self.make_clients(self.clock, unused_client_ttl=100.0)
        self.successResultOf(clients.add_client(make_client(created_at=START)))
        self.clock.advance(99)
        self.assertIsNotNoneResult(clients.get_client("client-1"))
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(clients.get_client("client-1")))

    def test_touch_sets_last_used_and_renews(self) -> None:
        clients = self.make_clients(self.clock, unused_client_ttl=100.0)
        self.successResultOf(clients.add_client(make_client(created_at=START)))
        self.clock.advance(90)
        self.assertIsNone(self.successResultOf(clients.touch_client("client-1")))
        got = self.successResultOf(clients.get_client("client-1"))
        self.assertEqual(got.last_used_at, START + 90)
        self.clock.advance(90)  # 180 s after creation, 90 s after the use
        self.assertIsNotNoneResult(clients.get_client("client-1"))
        self.clock.advance(10)
        self.assertIsNone(self.successResultOf(clients.get_client("client-1")))

    def test_touch_unknown_client_is_harmless(self) -> None:
        self.assertIsNone(self.successResultOf(self.clients.touch_client("nope")))
        self.assertIsNone(self.successResultOf(self.clients.get_client("nope")))

    def test_touch_expired_client_does_not_revive(self) -> None:
        clients = self.make_clients(self.clock, unused_client_ttl=100.0)
        self.successResultOf(clients.add_client(make_client(created_at=START)))
        self.clock.advance(100)
        self.successResultOf(clients.touch_client("client-1"))
        self.assertIsNone(self.successResultOf(clients.get_client("client-1")))

    def test_client_cap_evicts_oldest_never_used(self) -> None:
        clients = self.make_clients(self.clock, max_clients=3)
        for name in ("a", "b", "c"):
            self.successResultOf(clients.add_client(make_client(name)))
        self.successResultOf(clients.touch_client("a"))  # a is used: never evicted
        self.successResultOf(clients.add_client(make_client("d")))
        self.assertIsNotNoneResult(clients.get_client("a"))
        self.assertIsNone(self.successResultOf(clients.get_client("b")))
        self.assertIsNotNoneResult(clients.get_client("c"))
        self.assertIsNotNoneResult(clients.get_client("d"))

    def test_client_flood_from_one_owner_never_evicts_another(self) -> None:
        """Issue 15 item 4: registrations from one source replace only its own unused clients."""
        clients = self.make_clients(self.clock, max_clients=5)
        self.successResultOf(clients.add_client(make_client("alice", owner="192.0.2.1")))
        for i in range(50):
            flood = make_client(f"flood-{i}", owner="198.51.100.7")
            self.successResultOf(clients.add_client(flood))
        self.assertIsNotNoneResult(clients.get_client("alice"))
        self.assertIsNotNoneResult(clients.get_client("flood-49"))
        self.assertIsNone(self.successResultOf(clients.get_client("flood-45")))

    def test_client_cap_full_of_used_clients(self) -> None:
        clients = self.make_clients(self.clock, max_clients=2)
        for name in ("a", "b"):
            self.successResultOf(clients.add_client(make_client(name)))
            self.successResultOf(clients.touch_client(name))
        self.failureResultOf(clients.add_client(make_client("c")), StorageFull)
        self.assertIsNotNoneResult(clients.get_client("a"))
        self.assertIsNotNoneResult(clients.get_client("b"))
        self.assertIsNone(self.successResultOf(clients.get_client("c")))

    def test_client_cap_expired_clients_make_room(self) -> None:
        clients = self.make_clients(self.clock, max_clients=2, unused_client_ttl=100.0)
        for name in ("a", "b"):
            self.successResultOf(clients.add_client(make_client(name)))
            self.successResultOf(clients.touch_client(name))
        self.clock.advance(100)
        self.successResultOf(clients.add_client(make_client("c", created_at=START + 100)))
        self.assertIsNotNoneResult(clients.get_client("c"))


class LoginsConformance(ConformanceBase):
    """The ILogins contract."""

    def make_logins(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("logins", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.logins = self.make_logins(self.clock)

    def test_provides_ilogins(self) -> None:
        self.assertTrue(verifyObject(ILogins, self.logins))

    def test_pending_get_after_put(self) -> None:
        pending = make_pending()
        self.assertIsNone(self.successResultOf(self.logins.put_pending(pending)))
        self.assertEqual(self.successResultOf(self.logins.get_pending("state-1")), pending)
        # reading does not consume
        self.assertEqual(self.successResultOf(self.logins.get_pending("state-1")), pending)

    def test_pending_take_once(self) -> None:
        pending = make_pending()
        self.successResultOf(self.logins.put_pending(pending))
        self.assertEqual(self.successResultOf(self.logins.take_pending("state-1")), pending)
        self.assertIsNone(self.successResultOf(self.logins.take_pending("state-1")))
        self.assertIsNone(self.successResultOf(self.logins.get_pending("state-1")))

    def test_pending_expires(self) -> None:
        self.successResultOf(self.logins.put_pending(make_pending(lifespan=600)))
        self.clock.advance(599)
        self.assertIsNotNoneResult(self.logins.get_pending("state-1"))
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(self.logins.get_pending("state-1")))
        self.assertIsNone(self.successResultOf(self.logins.take_pending("state-1")))

    def test_pending_update(self) -> None:
        self.successResultOf(self.logins.put_pending(make_pending()))
        updated = make_pending(consented=True, csrf_token="csrf")
        self.assertIsNone(self.successResultOf(self.logins.update_pending(updated)))
        self.assertEqual(self.successResultOf(self.logins.get_pending("state-1")), updated)

    def test_pending_update_does_not_revive_taken(self) -> None:
        self.successResultOf(self.logins.put_pending(make_pending()))
        self.successResultOf(self.logins.take_pending("state-1"))
        self.successResultOf(self.logins.update_pending(make_pending(consented=True)))
        self.assertIsNone(self.successResultOf(self.logins.get_pending("state-1")))

    def test_pending_cap_evicts_own_oldest(self) -> None:
        logins = self.make_logins(self.clock, max_pending=2)
        self.successResultOf(logins.put_pending(make_pending("old", lifespan=900)))
        self.successResultOf(logins.put_pending(make_pending("soon", lifespan=300)))
        self.successResultOf(logins.put_pending(make_pending("new", lifespan=600)))
        self.assertIsNone(self.successResultOf(logins.get_pending("old")))
        self.assertIsNotNoneResult(logins.get_pending("soon"))
        self.assertIsNotNoneResult(logins.get_pending("new"))

    def test_pending_cap_expired_make_room_first(self) -> None:
        logins = self.make_logins(self.clock, max_pending=2)
        self.successResultOf(logins.put_pending(make_pending("victim", owner="b", lifespan=900)))
        self.successResultOf(logins.put_pending(make_pending("stale", owner="a", lifespan=10)))
        self.clock.advance(10)
        self.successResultOf(logins.put_pending(make_pending("new", owner="c")))
        self.assertIsNotNoneResult(logins.get_pending("victim"))
        self.assertIsNotNoneResult(logins.get_pending("new"))

    def test_pending_flood_from_one_owner_never_evicts_another(self) -> None:
        """Issue 15 item 4: one source filling the cap replaces only its own logins."""
        logins = self.make_logins(self.clock, max_pending=10)
        self.successResultOf(logins.put_pending(make_pending("alice", owner="192.0.2.1")))
        for i in range(100):
            flood = make_pending(f"flood-{i}", owner="2001:db8::/64")
            self.successResultOf(logins.put_pending(flood))
        self.assertIsNotNoneResult(logins.get_pending("alice"))
        self.assertIsNotNoneResult(logins.get_pending("flood-99"))
        # the flood kept its newest entries (every slot but alice's)
        self.assertIsNone(self.successResultOf(logins.get_pending("flood-90")))
        self.assertIsNotNoneResult(logins.get_pending("flood-91"))

    def test_pending_cap_takes_from_the_largest_owner(self) -> None:
        logins = self.make_logins(self.clock, max_pending=4)
        self.successResultOf(logins.put_pending(make_pending("a1", owner="a")))
        for i in range(3):
            self.successResultOf(logins.put_pending(make_pending(f"m{i}", owner="many")))
        # a newcomer with nothing takes the slot of the owner holding the most
        self.successResultOf(logins.put_pending(make_pending("b1", owner="b")))
        self.assertIsNone(self.successResultOf(logins.get_pending("m0")))
        for state in ("a1", "m1", "m2", "b1"):
            self.assertIsNotNoneResult(logins.get_pending(state))


class AuthorizationCodesConformance(ConformanceBase):
    """The IAuthorizationCodes contract."""

    def make_codes(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("codes", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.codes = self.make_codes(self.clock)

    def test_provides_iauthorizationcodes(self) -> None:
        self.assertTrue(verifyObject(IAuthorizationCodes, self.codes))

    def test_code_redeem_returns_before_and_marks(self) -> None:
        code = make_code()
        self.assertIsNone(self.successResultOf(self.codes.put_code(code)))
        first = self.successResultOf(self.codes.redeem_code("code-1"))
        self.assertEqual(first, code)
        self.assertFalse(first.redeemed)
        replay = self.successResultOf(self.codes.redeem_code("code-1"))
        self.assertTrue(replay.redeemed)

    def test_code_unknown(self) -> None:
        self.assertIsNone(self.successResultOf(self.codes.redeem_code("nope")))

    def test_code_kept_until_expiry_then_gone(self) -> None:
        self.successResultOf(self.codes.put_code(make_code(lifespan=60)))
        self.successResultOf(self.codes.redeem_code("code-1"))
        self.clock.advance(59)
        self.assertTrue(self.successResultOf(self.codes.redeem_code("code-1")).redeemed)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(self.codes.redeem_code("code-1")))

    def test_code_family(self) -> None:
        self.successResultOf(self.codes.put_code(make_code()))
        self.successResultOf(self.codes.redeem_code("code-1"))
        self.assertIsNone(self.successResultOf(self.codes.set_code_family("code-1", "fam")))
        replay = self.successResultOf(self.codes.redeem_code("code-1"))
        self.assertEqual(replay.family_id, "fam")
        self.assertTrue(replay.redeemed)

    def test_code_flood_by_one_user_never_evicts_another(self) -> None:
        codes = self.make_codes(self.clock, max_codes=3)
        self.successResultOf(codes.put_code(make_code("alice", user_id="alice")))
        for i in range(10):
            self.successResultOf(codes.put_code(make_code(f"m{i}", user_id="mallory")))
        self.assertIsNotNoneResult(codes.redeem_code("alice"))
        self.assertIsNone(self.successResultOf(codes.redeem_code("m7")))


class TokenFamiliesConformance(ConformanceBase):
    """The ITokenFamilies contract."""

    def make_families(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("families", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.families = self.make_families(self.clock)

    def test_provides_itokenfamilies(self) -> None:
        self.assertTrue(verifyObject(ITokenFamilies, self.families))

    def test_family_get_after_put(self) -> None:
        family = make_family()
        self.assertIsNone(self.successResultOf(self.families.put_family(family)))
        self.assertEqual(self.successResultOf(self.families.get_family("family-1")), family)
        self.assertIsNone(self.successResultOf(self.families.get_family("nope")))

    def test_family_expires(self) -> None:
        self.successResultOf(self.families.put_family(make_family(lifespan=100)))
        self.clock.advance(100)
        self.assertIsNone(self.successResultOf(self.families.get_family("family-1")))
        self.assertFalse(self.successResultOf(self.families.is_family_live("family-1")))

    def test_family_live_until_revoked(self) -> None:
        self.successResultOf(self.families.put_family(make_family()))
        self.successResultOf(self.families.put_family(make_family("born-revoked", revoked=True)))
        self.assertTrue(self.successResultOf(self.families.is_family_live("family-1")))
        self.assertFalse(self.successResultOf(self.families.is_family_live("born-revoked")))
        self.assertFalse(self.successResultOf(self.families.is_family_live("nope")))
        self.successResultOf(self.families.revoke_family("family-1"))
        self.assertFalse(self.successResultOf(self.families.is_family_live("family-1")))

    def test_refresh_token_in_family(self) -> None:
        """A refresh grant's one read: the token and its family's liveness."""
        self.successResultOf(self.families.put_family(make_family()))
        token = make_refresh_token()
        self.successResultOf(self.families.put_refresh_token(token))
        read = self.families.get_refresh_token_in_family
        self.assertEqual(self.successResultOf(read("rt-1")), (token, True))
        self.assertIsNone(self.successResultOf(read("nope")))
        self.successResultOf(self.families.mark_rotated("rt-1", START + 1, {"a": "b"}))
        rotated, live = self.successResultOf(read("rt-1"))
        self.assertEqual(
            (rotated.rotated_at, rotated.successor_response, live), (START + 1, {"a": "b"}, True)
        )
        self.successResultOf(self.families.revoke_family("family-1"))
        self.assertEqual(self.successResultOf(read("rt-1"))[1], False)

    def test_refresh_token_in_family_born_revoked_or_gone(self) -> None:
        self.successResultOf(self.families.put_family(make_family("born-revoked", revoked=True)))
        revoked = make_refresh_token("rt-r", family_id="born-revoked")
        orphan = make_refresh_token("rt-o", family_id="never-stored")
        for token in (revoked, orphan):
            self.successResultOf(self.families.put_refresh_token(token))
            found = self.successResultOf(self.families.get_refresh_token_in_family(token.token_id))
            self.assertEqual(found, (token, False))

    def test_family_access_tokens_recorded(self) -> None:
        self.successResultOf(self.families.put_family(make_family()))
        self.successResultOf(self.families.add_family_access_token("family-1", "j1", START + 300))
        self.successResultOf(self.families.add_family_access_token("family-1", "j2", START + 600))
        family = self.successResultOf(self.families.get_family("family-1"))
        self.assertEqual(family.access_token_jtis, (("j1", START + 300), ("j2", START + 600)))

    def test_revoke_unknown_family(self) -> None:
        self.assertIsNone(self.successResultOf(self.families.revoke_family("nope")))

    def test_refresh_token_get_after_put(self) -> None:
        token = make_refresh_token()
        self.assertIsNone(self.successResultOf(self.families.put_refresh_token(token)))
        self.assertEqual(self.successResultOf(self.families.get_refresh_token("rt-1")), token)
        self.assertIsNone(self.successResultOf(self.families.get_refresh_token("nope")))

    def test_refresh_token_expires(self) -> None:
        self.successResultOf(self.families.put_refresh_token(make_refresh_token(lifespan=100)))
        self.clock.advance(100)
        self.assertIsNone(self.successResultOf(self.families.get_refresh_token("rt-1")))

    def test_mark_rotated_once(self) -> None:
        self.successResultOf(self.families.put_refresh_token(make_refresh_token()))
        response: dict[str, object] = {"access_token": "a", "refresh_token": "r"}
        self.assertTrue(
            self.successResultOf(self.families.mark_rotated("rt-1", START + 5, response))
        )
        # the losing side of a race
        self.assertFalse(
            self.successResultOf(self.families.mark_rotated("rt-1", START + 6, {"other": 1}))
        )
        token = self.successResultOf(self.families.get_refresh_token("rt-1"))
        self.assertEqual(token.rotated_at, START + 5)
        self.assertEqual(token.successor_response, response)

    def test_mark_rotated_unknown(self) -> None:
        self.assertFalse(self.successResultOf(self.families.mark_rotated("nope", START, {})))

    def test_successor_response_copied(self) -> None:
        self.successResultOf(self.families.put_refresh_token(make_refresh_token()))
        response: dict[str, object] = {"access_token": "a", "scope": ["openid"]}
        self.successResultOf(self.families.mark_rotated("rt-1", START, response))
        response["access_token"] = "changed"
        got = self.successResultOf(self.families.get_refresh_token("rt-1"))
        assert got.successor_response is not None
        got.successor_response["scope"].append("admin")
        again = self.successResultOf(self.families.get_refresh_token("rt-1"))
        self.assertEqual(again.successor_response, {"access_token": "a", "scope": ["openid"]})

    def test_issuance_room_when_empty(self) -> None:
        self.assertIsNone(self.successResultOf(self.families.issuance_room("client-1", True)))

    def test_refresh_cap_never_evicts_a_current_token(self) -> None:
        families = self.make_families(self.clock, max_refresh_tokens=2)
        self.successResultOf(families.put_family(make_family("fa", client_id="a")))
        self.successResultOf(families.put_family(make_family("fb", client_id="b")))
        alice = make_refresh_token("alice", family_id="fa", client_id="a")
        self.successResultOf(families.put_refresh_token(alice))
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("b1", family_id="fb", client_id="b"))
        )
        self.failureResultOf(families.issuance_room("b", False), StorageFull)
        self.failureResultOf(
            families.put_refresh_token(make_refresh_token("b2", family_id="fb", client_id="b")),
            StorageFull,
        )
        # once b rotates, its rotated token makes room for its successor
        self.assertTrue(self.successResultOf(families.mark_rotated("b1", START, {})))
        self.assertIsNone(self.successResultOf(families.issuance_room("b", False)))
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("b2", family_id="fb", client_id="b"))
        )
        self.assertIsNone(self.successResultOf(families.get_refresh_token("b1")))
        self.assertIsNotNoneResult(families.get_refresh_token("alice"))
        self.assertIsNotNoneResult(families.get_refresh_token("b2"))

    def test_refresh_cap_evicts_the_flooding_clients_rotated_tokens(self) -> None:
        families = self.make_families(self.clock, max_refresh_tokens=4)
        self.successResultOf(families.put_family(make_family("fa", client_id="a")))
        self.successResultOf(families.put_family(make_family("fb", client_id="b")))
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("a0", family_id="fa", client_id="a"))
        )
        self.successResultOf(families.mark_rotated("a0", START, {}))
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("a1", family_id="fa", client_id="a"))
        )
        previous = "b0"
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("b0", family_id="fb", client_id="b"))
        )
        for i in range(1, 20):
            self.successResultOf(families.issuance_room("b", False))
            self.assertTrue(self.successResultOf(families.mark_rotated(previous, START, {})))
            previous = f"b{i}"
            self.successResultOf(
                families.put_refresh_token(
                    make_refresh_token(previous, family_id="fb", client_id="b")
                )
            )
        # a's rotated token (reuse detection) and current token both survived b's rotations
        self.assertIsNotNoneResult(families.get_refresh_token("a0"))
        self.assertIsNotNoneResult(families.get_refresh_token("a1"))
        self.assertIsNotNoneResult(families.get_refresh_token("b19"))

    def test_family_cap_never_evicts_another_clients_family(self) -> None:
        """Issue 15 item 4: logins flooding the families cap never end another user's login."""
        families = self.make_families(self.clock, max_families=3)
        self.successResultOf(families.put_family(make_family("alice", client_id="a")))
        for i in range(10):
            self.successResultOf(families.issuance_room("m", True))
            self.successResultOf(families.put_family(make_family(f"m{i}", client_id="m")))
        self.assertIsNotNoneResult(families.get_family("alice"))
        self.assertIsNotNoneResult(families.get_family("m9"))
        self.assertIsNone(self.successResultOf(families.get_family("m7")))
        # a third client with no family can neither evict alice's nor m's last ones... but
        # m holds two: its oldest is the flood's own, so b is refused rather than evicting
        failure = self.failureResultOf(families.issuance_room("b", True), StorageFull)
        self.assertEqual(failure.value.collection, "families")
        self.failureResultOf(families.put_family(make_family("b0", client_id="b")), StorageFull)
        self.assertIsNotNoneResult(families.get_family("alice"))

    def test_family_cap_evicts_revoked_families_first(self) -> None:
        families = self.make_families(self.clock, max_families=2)
        self.successResultOf(families.put_family(make_family("alice", client_id="a")))
        self.successResultOf(families.put_family(make_family("gone", client_id="c")))
        self.successResultOf(
            families.put_refresh_token(make_refresh_token("rt", family_id="gone", client_id="c"))
        )
        self.successResultOf(families.revoke_family("gone"))
        self.successResultOf(families.issuance_room("b", True))
        self.successResultOf(families.put_family(make_family("b0", client_id="b")))
        self.assertIsNone(self.successResultOf(families.get_family("gone")))
        self.assertIsNone(self.successResultOf(families.get_refresh_token("rt")))
        self.assertIsNotNoneResult(families.get_family("alice"))


class UpstreamSessionsConformance(ConformanceBase):
    """The IUpstreamSessions contract."""

    def make_upstream_sessions(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("upstream_sessions", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.upstream_sessions = self.make_upstream_sessions(self.clock)

    def test_provides_iupstreamsessions(self) -> None:
        self.assertTrue(verifyObject(IUpstreamSessions, self.upstream_sessions))

    def test_upstream_session_put_get_delete(self) -> None:
        session = make_session()
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.put_upstream_session(session))
        )
        self.assertEqual(
            self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1")), session
        )
        replaced = attrs.evolve(session, access_token="new-access")
        self.successResultOf(self.upstream_sessions.put_upstream_session(replaced))
        self.assertEqual(
            self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1")), replaced
        )
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.delete_upstream_session("tsid-1"))
        )
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1"))
        )
        # deleting twice is harmless
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.delete_upstream_session("tsid-1"))
        )

    def test_upstream_session_outlives_access_token(self) -> None:
        self.successResultOf(
            self.upstream_sessions.put_upstream_session(make_session(lifespan=86400))
        )
        self.clock.advance(7200)  # the upstream access token expired an hour ago
        self.assertIsNotNoneResult(self.upstream_sessions.get_upstream_session("tsid-1"))
        self.clock.advance(86400 - 7200)
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1"))
        )

    def test_refresh_lock_granted_and_released(self) -> None:
        """Every store grants a free lock and takes its release; whether a second taker
        waits depends on who shares the store (Redis: tests/test_storage_redis.py)."""
        lock = self.successResultOf(self.upstream_sessions.lock_refresh("tsid-1", 15.0))
        self.assertIsInstance(lock, str)
        self.assertIsNone(
            self.successResultOf(self.upstream_sessions.unlock_refresh("tsid-1", lock))
        )
        again = self.successResultOf(self.upstream_sessions.lock_refresh("tsid-1", 15.0))
        self.assertIsInstance(again, str)
        # releasing a lock that is not held (any more) is harmless
        self.successResultOf(self.upstream_sessions.unlock_refresh("tsid-1", again))
        self.successResultOf(self.upstream_sessions.unlock_refresh("tsid-1", again))

    def test_upstream_session_copies(self) -> None:
        session = make_session()
        self.successResultOf(self.upstream_sessions.put_upstream_session(session))
        groups: Any = session.claims["groups"]
        groups.append("intruders")
        got = self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1"))
        self.assertEqual(got.claims["groups"], ["admins"])
        got.claims["email"] = "mallory@example.com"
        again = self.successResultOf(self.upstream_sessions.get_upstream_session("tsid-1"))
        self.assertEqual(again.claims["email"], "alice@example.com")

    def test_upstream_session_flood_by_one_user_never_evicts_another(self) -> None:
        upstream_sessions = self.make_upstream_sessions(self.clock, max_upstream_sessions=3)
        self.successResultOf(
            upstream_sessions.put_upstream_session(make_session("alice", subject="alice"))
        )
        for i in range(10):
            flood = make_session(f"m{i}", subject="mallory")
            self.successResultOf(upstream_sessions.put_upstream_session(flood))
        self.assertIsNotNoneResult(upstream_sessions.get_upstream_session("alice"))
        self.assertIsNotNoneResult(upstream_sessions.get_upstream_session("m9"))
        self.assertIsNone(self.successResultOf(upstream_sessions.get_upstream_session("m7")))


class UsersConformance(ConformanceBase):
    """The IUsers contract."""

    def make_users(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("users", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.users = self.make_users(self.clock)

    def test_provides_iusers(self) -> None:
        self.assertTrue(verifyObject(IUsers, self.users))

    def test_user_ids_stable_and_distinct(self) -> None:
        alice = self.successResultOf(self.users.user_id_for("idp", "alice"))
        self.assertEqual(self.successResultOf(self.users.user_id_for("idp", "alice")), alice)
        bob = self.successResultOf(self.users.user_id_for("idp", "bob"))
        other_idp = self.successResultOf(self.users.user_id_for("other", "alice"))
        self.assertEqual(len({alice, bob, other_idp}), 3)
        self.assertGreater(len(alice), 15)
        self.assertNotEqual(alice, "alice")

    def test_user_ids_survive_time(self) -> None:
        alice = self.successResultOf(self.users.user_id_for("idp", "alice"))
        self.clock.advance(365 * 86400)
        self.sweep(self.users)
        self.assertEqual(self.successResultOf(self.users.user_id_for("idp", "alice")), alice)


class RevocationsConformance(ConformanceBase):
    """The IRevocations contract."""

    def make_revocations(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("revocations", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.revocations = self.make_revocations(self.clock)

    def test_provides_irevocations(self) -> None:
        self.assertTrue(verifyObject(IRevocations, self.revocations))

    def test_revoke_jti(self) -> None:
        before = self.revocations.generation
        self.assertFalse(self.successResultOf(self.revocations.is_jti_revoked("j1")))
        self.assertIsNone(self.successResultOf(self.revocations.revoke_jti("j1", START + 300)))
        self.assertTrue(self.successResultOf(self.revocations.is_jti_revoked("j1")))
        self.assertFalse(self.successResultOf(self.revocations.is_jti_revoked("j2")))
        after = self.revocations.generation
        self.assertNotEqual(after, before)
        self.successResultOf(self.revocations.revoke_jti("j2", START + 300))
        self.assertNotEqual(self.revocations.generation, after)

    def test_revoked_jti_kept_past_exp_then_forgotten(self) -> None:
        self.successResultOf(self.revocations.revoke_jti("j1", START + 300))
        self.clock.advance(300)
        # still refused while a guard with clock-skew leeway could accept the token
        self.assertTrue(self.successResultOf(self.revocations.is_jti_revoked("j1")))
        self.clock.advance(3600)
        self.assertFalse(self.successResultOf(self.revocations.is_jti_revoked("j1")))


class RateCountersConformance(ConformanceBase):
    """The IRateCounters contract."""

    def make_rate_counters(self, clock: Clock, **limits: Any) -> Any:
        return self.concern("rate_counters", clock, **limits)

    def setUp(self) -> None:
        super().setUp()
        self.rate_counters = self.make_rate_counters(self.clock)

    def test_provides_iratecounters(self) -> None:
        self.assertTrue(verifyObject(IRateCounters, self.rate_counters))

    def test_bucket_empties_and_refills(self) -> None:
        take = self.rate_counters.take
        self.assertEqual(self.successResultOf(take("a", 2.0, 0.2)), 0)
        self.assertEqual(self.successResultOf(take("a", 2.0, 0.2)), 0)
        self.assertAlmostEqual(self.successResultOf(take("a", 2.0, 0.2)), 5.0)
        self.assertEqual(self.successResultOf(take("b", 2.0, 0.2)), 0)  # keys are apart
        self.clock.advance(5)
        self.assertEqual(self.successResultOf(take("a", 2.0, 0.2)), 0)
        self.assertGreater(self.successResultOf(take("a", 2.0, 0.2)), 0)


class StorageConformance(ConformanceBase):
    """What spans concerns, on a whole Storage."""

    def setUp(self) -> None:
        super().setUp()
        self.storage = self.make_storage(self.clock)

    def test_every_concern_provides_its_interface(self) -> None:
        self.assertTrue(verifyObject(IClients, self.storage.clients))
        self.assertTrue(verifyObject(ILogins, self.storage.logins))
        self.assertTrue(verifyObject(IAuthorizationCodes, self.storage.codes))
        self.assertTrue(verifyObject(ITokenFamilies, self.storage.families))
        self.assertTrue(verifyObject(IUpstreamSessions, self.storage.upstream_sessions))
        self.assertTrue(verifyObject(IRevocations, self.storage.revocations))
        self.assertTrue(verifyObject(IRateCounters, self.storage.rate_counters))
        self.assertTrue(verifyObject(IUsers, self.storage.users))

    def test_clock_attribute(self) -> None:
        self.assertIs(self.storage.clock, self.clock)

    def test_revoke_family_deny_lists_jtis(self) -> None:
        self.successResultOf(self.storage.families.put_family(make_family()))
        self.successResultOf(
            self.storage.families.add_family_access_token("family-1", "j1", START + 300)
        )
        self.successResultOf(
            self.storage.families.add_family_access_token("family-1", "j2", START + 600)
        )
        before = self.storage.revocations.generation
        revoked = self.successResultOf(self.storage.families.revoke_family("family-1"))
        self.assertTrue(revoked.revoked)
        self.assertEqual(revoked.family_id, "family-1")
        self.assertTrue(self.successResultOf(self.storage.families.get_family("family-1")).revoked)
        self.assertTrue(self.successResultOf(self.storage.revocations.is_jti_revoked("j1")))
        self.assertTrue(self.successResultOf(self.storage.revocations.is_jti_revoked("j2")))
        self.assertFalse(self.successResultOf(self.storage.revocations.is_jti_revoked("j3")))
        self.assertNotEqual(self.storage.revocations.generation, before)

    def test_access_token_added_to_revoked_family_is_revoked(self) -> None:
        self.successResultOf(self.storage.families.put_family(make_family()))
        self.successResultOf(self.storage.families.revoke_family("family-1"))
        self.successResultOf(
            self.storage.families.add_family_access_token("family-1", "late", START + 300)
        )
        self.assertTrue(self.successResultOf(self.storage.revocations.is_jti_revoked("late")))

    def test_sweep_keeps_live_records(self) -> None:
        self.successResultOf(self.storage.clients.add_client(make_client()))
        self.successResultOf(self.storage.logins.put_pending(make_pending()))
        self.successResultOf(self.storage.codes.put_code(make_code()))
        self.successResultOf(self.storage.families.put_family(make_family()))
        self.successResultOf(self.storage.families.put_refresh_token(make_refresh_token()))
        self.successResultOf(self.storage.upstream_sessions.put_upstream_session(make_session()))
        self.successResultOf(self.storage.revocations.revoke_jti("j1", START + 300))
        self.sweep(self.storage)
        self.assertIsNotNoneResult(self.storage.clients.get_client("client-1"))
        self.assertIsNotNoneResult(self.storage.logins.get_pending("state-1"))
        self.assertIsNotNoneResult(self.storage.codes.redeem_code("code-1"))
        self.assertIsNotNoneResult(self.storage.families.get_family("family-1"))
        self.assertIsNotNoneResult(self.storage.families.get_refresh_token("rt-1"))
        self.assertIsNotNoneResult(self.storage.upstream_sessions.get_upstream_session("tsid-1"))
        self.assertTrue(self.successResultOf(self.storage.revocations.is_jti_revoked("j1")))

    def test_sweep_after_expiry(self) -> None:
        storage = self.make_storage(self.clock, unused_client_ttl=1000.0)
        self.successResultOf(storage.clients.add_client(make_client()))
        self.successResultOf(storage.logins.put_pending(make_pending()))
        self.successResultOf(storage.codes.put_code(make_code()))
        self.successResultOf(storage.families.put_family(make_family()))
        self.successResultOf(storage.families.put_refresh_token(make_refresh_token()))
        self.successResultOf(storage.upstream_sessions.put_upstream_session(make_session()))
        self.successResultOf(storage.revocations.revoke_jti("j1", START + 300))
        self.clock.advance(2 * 86400)
        self.sweep(storage)
        self.assertIsNone(self.successResultOf(storage.clients.get_client("client-1")))
        self.assertIsNone(self.successResultOf(storage.logins.get_pending("state-1")))
        self.assertIsNone(self.successResultOf(storage.codes.redeem_code("code-1")))
        self.assertIsNone(self.successResultOf(storage.families.get_family("family-1")))
        self.assertIsNone(self.successResultOf(storage.families.get_refresh_token("rt-1")))
        self.assertIsNone(
            self.successResultOf(storage.upstream_sessions.get_upstream_session("tsid-1"))
        )
        self.assertFalse(self.successResultOf(storage.revocations.is_jti_revoked("j1")))

    def test_revoked_jtis_never_evicted_issuance_refused(self) -> None:
        """Issue 15 item 3: a full deny list refuses issuance instead of forgetting."""
        storage = self.make_storage(self.clock, max_revoked_jtis=3)
        self.successResultOf(storage.revocations.revoke_jti("victim", START + 900))
        for i in range(10):
            self.successResultOf(storage.revocations.revoke_jti(f"j{i}", START + 300))
        self.assertTrue(self.successResultOf(storage.revocations.is_jti_revoked("victim")))
        failure = self.failureResultOf(
            storage.families.issuance_room("client-1", False), StorageFull
        )
        self.assertEqual(failure.value.collection, "revoked_jtis")
        self.assertGreater(failure.value.retry_after, 0)
        # once the flood's revocations expire, issuance resumes; the victim's still holds
        self.clock.advance(300 + 3600)
        self.assertIsNone(self.successResultOf(storage.families.issuance_room("client-1", False)))
        self.successResultOf(storage.revocations.revoke_jti("victim-2", START + 9000))
        self.assertTrue(self.successResultOf(storage.revocations.is_jti_revoked("victim-2")))
