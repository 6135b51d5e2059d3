"""MemoryStorage: an in-process, bounded, expiring IStorage.

Every collection is a dict (O(1) lookups) beside a heap ordered by expiry, so that sweeping
and evicting at a cap cost O(log n). Records go in and come out as detached copies: a caller
mutating a dict inside a record it was handed cannot change what is stored.

Everything is lost on restart; a networked backend (Redis) implements the same IStorage.
"""

from __future__ import annotations

import heapq
import itertools
import math
import secrets
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

import attrs
from attrs import AttrsInstance
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from authproxy.storage.interface import IStorage, StorageFull
from authproxy.storage.models import (
    AuthorizationCode,
    PendingAuthorization,
    RefreshToken,
    RegisteredClient,
    TokenFamily,
    UpstreamTokenSession,
)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
R = TypeVar("R", bound=AttrsInstance)


def copy_json(value: Any) -> Any:
    """A deep copy of JSON-like data (dicts, lists, sets of plain values).

    Records hold JSON-like metadata only; this is several times cheaper than
    ``copy.deepcopy``, which matters on the token endpoint's path.
    """
    if isinstance(value, dict):
        return {key: copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    if isinstance(value, set):
        return set(value)
    return value


def detached(record: R) -> R:
    """A copy of a frozen attrs record whose mutable members (dicts, lists) are deep copies."""
    changes: dict[str, Any] = {}
    for field in attrs.fields(type(record)):
        value = getattr(record, field.name)
        if isinstance(value, dict | list | set):
            changes[field.alias or field.name] = copy_json(value)
    return attrs.evolve(record, **changes) if changes else record  # type: ignore[misc]


class _ExpiringMap(Generic[K, V]):
    """A dict whose entries carry an expiry, with a lazily cleaned heap ordered by expiry.

    The heap may hold stale entries (replaced or deleted keys); each dict entry remembers the
    sequence number of its live heap entry, and the heap is rebuilt once stale entries
    outnumber live ones, so memory stays proportional to the live size.
    """

    def __init__(self) -> None:
        self._items: dict[K, tuple[V, float, int]] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K, now: float) -> V | None:
        """The value, or None when absent or expired (expired entries wait for a sweep)."""
        entry = self._items.get(key)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def expires_at(self, key: K) -> float | None:
        entry = self._items.get(key)
        return None if entry is None else entry[1]

    def set(self, key: K, value: V, expires_at: float) -> None:
        seq = next(self._seq)
        self._items[key] = (value, expires_at, seq)
        heapq.heappush(self._heap, (expires_at, seq, key))
        self._maybe_compact()

    def replace_value(self, key: K, value: V) -> None:
        """Change the value and keep the expiry (and heap entry) of an existing key."""
        _, expires_at, seq = self._items[key]
        self._items[key] = (value, expires_at, seq)

    def pop(self, key: K) -> V | None:
        entry = self._items.pop(key, None)
        self._maybe_compact()
        return None if entry is None else entry[0]

    def pop_soonest(self) -> tuple[K, V, float] | None:
        """Remove and return the entry expiring first (expired entries come out first)."""
        while self._heap:
            expires_at, seq, key = heapq.heappop(self._heap)
            entry = self._items.get(key)
            if entry is not None and entry[2] == seq:
                del self._items[key]
                return key, entry[0], expires_at
        return None

    def sweep(self, now: float) -> list[K]:
        """Remove every expired entry; returns their keys."""
        removed: list[K] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._items.get(key)
            if entry is not None and entry[2] == seq:
                del self._items[key]
                removed.append(key)
        self._maybe_compact()
        return removed

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._items) + 64:
            self._heap = [(exp, seq, key) for key, (_, exp, seq) in self._items.items()]
            heapq.heapify(self._heap)


@implementer(IStorage)
class MemoryStorage:
    """IStorage in process memory, expiring by the injected clock and bounded on every collection.

    Expired records are invisible at once and removed by :meth:`sweep` (run it periodically
    with :class:`authproxy.storage.sweeper.StorageSweeper`).

    What happens when a collection reaches its cap:

    - clients: expired clients are dropped, then the oldest never-used client
      (``last_used_at`` None) is evicted; when every client has been used, ``add_client``
      fails with :class:`StorageFull` (registration answers an error, used clients survive).
    - pending authorizations, codes, refresh tokens, token families, upstream sessions and
      revoked jtis: the entry expiring soonest is evicted (expired ones first). A flood then
      costs its own oldest entries rather than refusing every newcomer; a live eviction is
      counted and logged as a warning (once per sweep period and collection, not per entry).
      For the deny list this can forget a still-valid revocation, which is why it is logged.
    - users: the least recently seen upstream identity is forgotten (its next login gets a
      new user id); refusing logins instead would lock everyone out for good.

    ``unused_client_ttl`` None keeps clients forever. Revoked jtis are kept for
    ``revoked_jti_leeway`` seconds past their exp, because the guard accepts a token that
    long after its exp (clock-skew leeway).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_clients: int = 10000,
        unused_client_ttl: float | None = 30 * 86400,
        max_pending: int = 10000,
        max_codes: int = 10000,
        max_refresh_tokens: int = 100000,
        max_families: int = 100000,
        max_upstream_sessions: int = 100000,
        max_users: int = 100000,
        max_revoked_jtis: int = 100000,
        revoked_jti_leeway: float = 60.0,
    ) -> None:
        self.clock = clock
        # through Any: without the mypy-zope plugin, mypy misreads interface methods
        self._seconds: Callable[[], float] = cast(Any, clock).seconds
        self._unused_client_ttl = unused_client_ttl
        self._jti_leeway = revoked_jti_leeway
        self._caps = {
            "clients": max_clients,
            "pending": max_pending,
            "codes": max_codes,
            "refresh_tokens": max_refresh_tokens,
            "families": max_families,
            "upstream_sessions": max_upstream_sessions,
            "users": max_users,
            "revoked_jtis": max_revoked_jtis,
        }
        for name, cap in self._caps.items():
            if cap < 1:
                raise ValueError(f"max_{name} must be at least 1, not {cap}")
        self._clients: _ExpiringMap[str, RegisteredClient] = _ExpiringMap()
        # client_id -> None in registration order: the eviction candidates
        self._never_used: OrderedDict[str, None] = OrderedDict()
        self._pending: _ExpiringMap[str, PendingAuthorization] = _ExpiringMap()
        self._codes: _ExpiringMap[str, AuthorizationCode] = _ExpiringMap()
        self._refresh_tokens: _ExpiringMap[str, RefreshToken] = _ExpiringMap()
        self._families: _ExpiringMap[str, TokenFamily] = _ExpiringMap()
        # (jti -> exp) per family, beside the records: a refresh adds one in O(1) instead of
        # rebuilding the family record (whose jti list grows with every rotation).
        self._family_jtis: dict[str, dict[str, float]] = {}
        self._family_jtis_pruned_at: dict[str, int] = {}
        self._upstream_sessions: _ExpiringMap[str, UpstreamTokenSession] = _ExpiringMap()
        self._revoked_jtis: _ExpiringMap[str, None] = _ExpiringMap()
        # (upstream_name, subject) -> user id, least recently seen first
        self._users: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._generation = 0
        # live entries evicted at a cap since the last sweep, per collection
        self._evictions: dict[str, int] = {}

    # -- internals -------------------------------------------------------------
    def _now(self) -> float:
        return self._seconds()

    def _count_eviction(self, collection: str) -> None:
        count = self._evictions.get(collection, 0) + 1
        self._evictions[collection] = count
        if count == 1:
            self.log.warn(
                "Storage collection {collection} reached its cap of {cap}: evicting live entries",
                collection=collection,
                cap=self._caps[collection],
            )

    def _make_room(self, collection: str, store: _ExpiringMap[str, Any], key: str) -> None:
        """Evict the soonest-expiring entries until a new key fits under the cap."""
        if key in store:
            return
        cap = self._caps[collection]
        now = self._now()
        while len(store) >= cap:
            evicted = store.pop_soonest()
            if evicted is None:
                break
            if evicted[2] > now:
                self._count_eviction(collection)
            if store is self._families:
                self._forget_family_jtis(evicted[0])

    def _forget_family_jtis(self, family_id: str) -> None:
        self._family_jtis.pop(family_id, None)
        self._family_jtis_pruned_at.pop(family_id, None)

    def _client_expiry(self, client: RegisteredClient) -> float:
        if self._unused_client_ttl is None:
            return math.inf
        base = client.created_at if client.last_used_at is None else client.last_used_at
        return max(base, client.created_at) + self._unused_client_ttl

    # -- clients ---------------------------------------------------------------
    def add_client(self, client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict the oldest never-used client (StorageFull if none)."""
        key = client.client_id
        if key not in self._clients and len(self._clients) >= self._caps["clients"]:
            for gone in self._clients.sweep(self._now()):
                self._never_used.pop(gone, None)
            if len(self._clients) >= self._caps["clients"]:
                if not self._never_used:
                    return defer.fail(StorageFull(f"client cap of {self._caps['clients']} reached"))
                oldest, _ = self._never_used.popitem(last=False)
                self._clients.pop(oldest)
                self._count_eviction("clients")
        self._clients.set(key, detached(client), self._client_expiry(client))
        if client.last_used_at is None:
            self._never_used[key] = None
        else:
            self._never_used.pop(key, None)
        return defer.succeed(None)

    def get_client(self, client_id: str) -> Deferred[RegisteredClient | None]:
        """The client, or None when unknown or expired for lack of use."""
        client = self._clients.get(client_id, self._now())
        return defer.succeed(None if client is None else detached(client))

    def touch_client(self, client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry."""
        now = self._now()
        client = self._clients.get(client_id, now)
        if client is not None:
            client = attrs.evolve(client, last_used_at=now)
            self._clients.set(client_id, client, self._client_expiry(client))
            self._never_used.pop(client_id, None)
        return defer.succeed(None)

    # -- pending authorizations -------------------------------------------------
    def put_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at."""
        self._make_room("pending", self._pending, pending.state)
        self._pending.set(pending.state, detached(pending), pending.expires_at)
        return defer.succeed(None)

    def get_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read without consuming (the consent page)."""
        pending = self._pending.get(state, self._now())
        return defer.succeed(None if pending is None else detached(pending))

    def update_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Replace an existing pending authorization (same state).

        When it is gone (taken, expired or evicted) nothing is stored: an update must never
        bring back a state that already completed the flow.
        """
        if self._pending.get(pending.state, self._now()) is not None:
            self._pending.set(pending.state, detached(pending), pending.expires_at)
        return defer.succeed(None)

    def take_pending(self, state: str) -> Deferred[PendingAuthorization | None]:
        """Read and delete: a state can complete the flow once."""
        pending = self._pending.get(state, self._now())
        self._pending.pop(state)
        return defer.succeed(pending)

    # -- authorization codes ----------------------------------------------------
    def put_code(self, code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""
        self._make_room("codes", self._codes, code.code_id)
        self._codes.set(code.code_id, detached(code), code.expires_at)
        return defer.succeed(None)

    def redeem_code(self, code_id: str) -> Deferred[AuthorizationCode | None]:
        """Mark redeemed; returns the record as it was *before* (``redeemed`` True means replay)."""
        code = self._codes.get(code_id, self._now())
        if code is not None and not code.redeemed:
            self._codes.replace_value(code_id, attrs.evolve(code, redeemed=True))
        return defer.succeed(code)

    def set_code_family(self, code_id: str, family_id: str) -> Deferred[None]:
        """Remember which token family the first redemption created (for replay revocation)."""
        code = self._codes.get(code_id, self._now())
        if code is not None:
            self._codes.replace_value(code_id, attrs.evolve(code, family_id=family_id))
        return defer.succeed(None)

    # -- refresh tokens and token families --------------------------------------
    def put_family(self, family: TokenFamily) -> Deferred[None]:
        """Store a new token family."""
        self._make_room("families", self._families, family.family_id)
        self._families.set(
            family.family_id, attrs.evolve(family, access_token_jtis=()), family.expires_at
        )
        self._family_jtis[family.family_id] = dict(family.access_token_jtis)
        return defer.succeed(None)

    def get_family(self, family_id: str) -> Deferred[TokenFamily | None]:
        """The family, or None."""
        family = self._families.get(family_id, self._now())
        return defer.succeed(None if family is None else self._with_jtis(family))

    def _with_jtis(self, family: TokenFamily) -> TokenFamily:
        jtis = self._family_jtis.get(family.family_id, {})
        return attrs.evolve(family, access_token_jtis=tuple(jtis.items()))

    def add_family_access_token(self, family_id: str, jti: str, exp: float) -> Deferred[None]:
        """Record an access token issued in the family, so revoking the family revokes it.

        Access tokens past their exp (and leeway) are dropped from the list, so it stays as
        short as the number of live access tokens. A jti added to an already revoked family
        is deny-listed at once.
        """
        now = self._now()
        family = self._families.get(family_id, now)
        if family is None:
            return defer.succeed(None)
        jtis = self._family_jtis.setdefault(family_id, {})
        jtis[jti] = exp
        # Drop expired entries whenever the table doubled since the last pruning: O(1)
        # amortized per added token, and the table stays proportional to live tokens.
        if len(jtis) > 2 * self._family_jtis_pruned_at.get(family_id, 0) + 16:
            for old_jti, old_exp in list(jtis.items()):
                if old_exp + self._jti_leeway <= now:
                    del jtis[old_jti]
            self._family_jtis_pruned_at[family_id] = len(jtis)
        if family.revoked:
            self._revoke_jti(jti, exp, now)
        return defer.succeed(None)

    def revoke_family(self, family_id: str) -> Deferred[TokenFamily | None]:
        """Mark the family revoked, deny-list its access tokens; returns the family (or None)."""
        now = self._now()
        family = self._families.get(family_id, now)
        if family is None:
            return defer.succeed(None)
        family = attrs.evolve(family, revoked=True)
        self._families.replace_value(family_id, family)
        for jti, exp in self._family_jtis.get(family_id, {}).items():
            self._revoke_jti(jti, exp, now)
        self._generation += 1
        return defer.succeed(self._with_jtis(family))

    def put_refresh_token(self, token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at."""
        self._make_room("refresh_tokens", self._refresh_tokens, token.token_id)
        self._refresh_tokens.set(token.token_id, detached(token), token.expires_at)
        return defer.succeed(None)

    def get_refresh_token(self, token_id: str) -> Deferred[RefreshToken | None]:
        """The token record, or None."""
        token = self._refresh_tokens.get(token_id, self._now())
        return defer.succeed(None if token is None else detached(token))

    def mark_rotated(
        self, token_id: str, rotated_at: float, successor_response: dict[str, object]
    ) -> Deferred[bool]:
        """Record the rotation; False when it was already rotated (lost the race) or is gone."""
        token = self._refresh_tokens.get(token_id, self._now())
        if token is None or token.rotated_at is not None:
            return defer.succeed(False)
        self._refresh_tokens.replace_value(
            token_id,
            attrs.evolve(
                token,
                rotated_at=rotated_at,
                successor_response=copy_json(successor_response),
            ),
        )
        return defer.succeed(True)

    # -- users --------------------------------------------------------------------
    def user_id_for(self, upstream_name: str, upstream_subject: str) -> Deferred[str]:
        """The stable internal user id for an upstream identity, created on first sight."""
        key = (upstream_name, upstream_subject)
        user_id = self._users.get(key)
        if user_id is not None:
            self._users.move_to_end(key)
            return defer.succeed(user_id)
        if len(self._users) >= self._caps["users"]:
            self._users.popitem(last=False)
            self._count_eviction("users")
        user_id = secrets.token_urlsafe(16)
        self._users[key] = user_id
        return defer.succeed(user_id)

    # -- upstream token sessions ----------------------------------------------------
    def put_upstream_session(self, session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""
        self._make_room("upstream_sessions", self._upstream_sessions, session.tsid)
        self._upstream_sessions.set(session.tsid, detached(session), session.expires_at)
        return defer.succeed(None)

    def get_upstream_session(self, tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""
        session = self._upstream_sessions.get(tsid, self._now())
        return defer.succeed(None if session is None else detached(session))

    def delete_upstream_session(self, tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""
        self._upstream_sessions.pop(tsid)
        return defer.succeed(None)

    # -- access-token deny list -------------------------------------------------------
    def _revoke_jti(self, jti: str, exp: float, now: float) -> bool:
        """Deny-list until exp plus leeway; True when the deny list changed."""
        until = exp + self._jti_leeway
        if until <= now:
            return False  # the guard refuses this token anyway
        known = self._revoked_jtis.expires_at(jti)
        if known is not None and known >= until:
            return False  # already deny-listed at least that long
        self._make_room("revoked_jtis", self._revoked_jtis, jti)
        self._revoked_jtis.set(jti, None, until)
        return True

    def revoke_jti(self, jti: str, exp: float) -> Deferred[None]:
        """Deny-list an access token id until its exp.

        The revocation generation is bumped whenever the deny list changes.
        """
        if self._revoke_jti(jti, exp, self._now()):
            self._generation += 1
        return defer.succeed(None)

    def is_jti_revoked(self, jti: str) -> Deferred[bool]:
        """True while the jti is deny-listed."""
        expires_at = self._revoked_jtis.expires_at(jti)
        return defer.succeed(expires_at is not None and expires_at > self._now())

    def revocation_generation(self) -> int:
        """A counter bumped on every revocation, so caches of verified tokens can re-check."""
        return self._generation

    # -- maintenance -------------------------------------------------------------------
    def sweep(self) -> Deferred[int]:
        """Remove every expired record; fires with how many were removed.

        Also reports (and resets) the count of live entries evicted at a cap since the
        last sweep.
        """
        now = self._now()
        removed = 0
        for gone in self._clients.sweep(now):
            self._never_used.pop(gone, None)
            removed += 1
        for store in (
            self._pending,
            self._codes,
            self._refresh_tokens,
            self._upstream_sessions,
            self._revoked_jtis,
        ):
            removed += len(store.sweep(now))
        for family_id in self._families.sweep(now):
            self._forget_family_jtis(family_id)
            removed += 1
        for collection, count in sorted(self._evictions.items()):
            self.log.warn(
                "Evicted {count} live entries from {collection} at its cap of {cap}",
                count=count,
                collection=collection,
                cap=self._caps[collection],
            )
        self._evictions.clear()
        return defer.succeed(removed)

    def sizes(self) -> dict[str, int]:
        """How many entries each collection holds (expired but unswept ones included)."""
        return {
            "clients": len(self._clients),
            "pending": len(self._pending),
            "codes": len(self._codes),
            "refresh_tokens": len(self._refresh_tokens),
            "families": len(self._families),
            "upstream_sessions": len(self._upstream_sessions),
            "users": len(self._users),
            "revoked_jtis": len(self._revoked_jtis),
        }
