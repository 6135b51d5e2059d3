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

from authproxy.storage.fairness import OwnerIndex
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

    def sweep(self, now: float) -> list[tuple[K, V]]:
        """Remove every expired entry; returns them."""
        removed: list[tuple[K, V]] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, key = heapq.heappop(self._heap)
            entry = self._items.get(key)
            if entry is not None and entry[2] == seq:
                del self._items[key]
                removed.append((key, entry[0]))
        self._maybe_compact()
        return removed

    def soonest_expiry(self) -> float | None:
        """When the first entry expires (a stale heap entry may answer a little early)."""
        return self._heap[0][0] if self._heap else None

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._items) + 64:
            self._heap = [(exp, seq, key) for key, (_, exp, seq) in self._items.items()]
            heapq.heapify(self._heap)


@implementer(IStorage)
class MemoryStorage:
    """IStorage in process memory, expiring by the injected clock and bounded on every collection.

    Expired records are invisible at once and removed by :meth:`sweep` (run it periodically
    with :class:`authproxy.storage.sweeper.StorageSweeper`).

    What happens when a collection reaches its cap (expired entries always go first). An
    *owner* is the source address (its rate-limit key) for records that unauthenticated
    requests create, and the client for refresh tokens and families; at a cap the owner
    holding the most entries loses its oldest, the newcomer's own whenever it holds as many
    as anyone (:class:`authproxy.storage.fairness.OwnerIndex`), so a flood replaces its own:

    - clients: only never-used clients (``last_used_at`` None) can be evicted, by owner; when
      every client has been used, ``add_client`` fails with :class:`StorageFull`.
    - pending authorizations: evicted by owner.
    - refresh tokens: only rotated ones (kept to detect reuse) can be evicted, by client; a
      current refresh token is never evicted.
    - token families: a revoked family first, else the requesting client's oldest when it
      holds the most families and more than one; a client's only family (another user's
      login) is never evicted.
    - revoked jtis: never evicted before their exp; the deny list may exceed its cap by the
      access tokens already issued, while :meth:`issuance_room` refuses new ones.
    - authorization codes and upstream sessions: evicted by owner, the user (one user's
      login flood replaces that user's own).
    - users: the least recently seen upstream identity is forgotten (its next login gets a
      new user id); refusing logins instead would lock everyone out for good.

    Live evictions and refusals are counted (:meth:`refusals` for metrics) and logged as a
    warning once per sweep period and collection, not per entry.

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
        # never-used clients by the source that registered them: the eviction candidates
        self._never_used = OwnerIndex()
        self._pending: _ExpiringMap[str, PendingAuthorization] = _ExpiringMap()
        self._pending_owners = OwnerIndex()
        self._codes: _ExpiringMap[str, AuthorizationCode] = _ExpiringMap()
        self._code_owners = OwnerIndex()  # by user
        self._refresh_tokens: _ExpiringMap[str, RefreshToken] = _ExpiringMap()
        self._rotated = OwnerIndex()  # rotated refresh tokens by client: the eviction candidates
        self._family_tokens: dict[str, set[str]] = {}  # family -> its refresh token ids
        self._families: _ExpiringMap[str, TokenFamily] = _ExpiringMap()
        self._family_owners = OwnerIndex()  # families by client
        self._revoked_families: OrderedDict[str, None] = OrderedDict()
        # (jti -> exp) per family, beside the records: a refresh adds one in O(1) instead of
        # rebuilding the family record (whose jti list grows with every rotation).
        self._family_jtis: dict[str, dict[str, float]] = {}
        self._family_jtis_pruned_at: dict[str, int] = {}
        self._upstream_sessions: _ExpiringMap[str, UpstreamTokenSession] = _ExpiringMap()
        self._session_owners = OwnerIndex()  # by upstream user
        self._revoked_jtis: _ExpiringMap[str, None] = _ExpiringMap()
        # (upstream_name, subject) -> user id, least recently seen first
        self._users: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._generation = 0
        # live entries evicted at a cap since the last sweep, per collection
        self._evictions: dict[str, int] = {}
        # requests refused at a full cap: since the last sweep, and in total (a metric)
        self._refused: dict[str, int] = {}
        self._refusals_total: dict[str, int] = {}

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

    def _refuse(self, collection: str, store: _ExpiringMap[str, Any] | None) -> StorageFull:
        """Count a refusal at a full cap; the StorageFull to raise (or fail with)."""
        self._refusals_total[collection] = self._refusals_total.get(collection, 0) + 1
        count = self._refused.get(collection, 0) + 1
        self._refused[collection] = count
        cap = self._caps[collection]
        if count == 1:
            self.log.warn(
                "Storage collection {collection} is full at its cap of {cap}: refusing",
                collection=collection,
                cap=cap,
            )
        retry_after = None
        soonest = None if store is None else store.soonest_expiry()
        if soonest is not None:
            retry_after = min(3600.0, max(1.0, soonest - self._now()))
        return StorageFull(f"{collection} cap of {cap} reached", collection, retry_after)

    def refusals(self) -> dict[str, int]:
        """How many requests each collection refused at its cap since start (a counter)."""
        return dict(self._refusals_total)

    def _full(self, collection: str, store: _ExpiringMap[str, Any], key: str) -> bool:
        """True when ``key`` is new and the collection is at its cap even without expired
        entries (which this removes)."""
        if key in store or len(store) < self._caps[collection]:
            return False
        now = self._now()
        soonest = store.soonest_expiry()
        if soonest is not None and soonest <= now:
            self._sweep_collection(collection, now)
        return len(store) >= self._caps[collection]

    def _put_owned(
        self,
        collection: str,
        store: _ExpiringMap[str, Any],
        owners: OwnerIndex,
        key: str,
        owner: str,
        value: Any,
        expires_at: float,
    ) -> None:
        """Store; at the cap, the oldest entry of the owner holding the most goes first (the
        newcomer's own whenever it holds as many as anyone)."""
        if self._full(collection, store, key):
            victim = owners.victim(owner)
            if victim is not None:
                store.pop(victim[0])
                owners.discard(victim[0])
                self._count_eviction(collection)
        store.set(key, value, expires_at)
        owners.add(key, owner)

    def _forget_family(self, family_id: str) -> None:
        """Drop what hangs off a family that left the store (expired or evicted)."""
        self._family_jtis.pop(family_id, None)
        self._family_jtis_pruned_at.pop(family_id, None)
        self._family_owners.discard(family_id)
        self._revoked_families.pop(family_id, None)
        for token_id in self._family_tokens.pop(family_id, ()):
            self._refresh_tokens.pop(token_id)
            self._rotated.discard(token_id)

    def _forget_refresh_token(self, token_id: str, family_id: str) -> None:
        self._rotated.discard(token_id)
        tokens = self._family_tokens.get(family_id)
        if tokens is not None:
            tokens.discard(token_id)
            if not tokens:
                del self._family_tokens[family_id]

    def _sweep_collection(self, collection: str, now: float) -> int:
        """Remove the expired entries of one collection (and what indexes them)."""
        if collection == "clients":
            gone_clients = self._clients.sweep(now)
            for client_id, _ in gone_clients:
                self._never_used.discard(client_id)
            return len(gone_clients)
        if collection == "pending":
            gone_pending = self._pending.sweep(now)
            for state, _ in gone_pending:
                self._pending_owners.discard(state)
            return len(gone_pending)
        if collection == "refresh_tokens":
            gone_tokens = self._refresh_tokens.sweep(now)
            for token_id, token in gone_tokens:
                self._forget_refresh_token(token_id, token.family_id)
            return len(gone_tokens)
        if collection == "families":
            gone_families = self._families.sweep(now)
            for family_id, _ in gone_families:
                self._forget_family(family_id)
            return len(gone_families)
        if collection == "revoked_jtis":
            return len(self._revoked_jtis.sweep(now))
        owned: dict[str, tuple[_ExpiringMap[str, Any], OwnerIndex]] = {
            "codes": (self._codes, self._code_owners),
            "upstream_sessions": (self._upstream_sessions, self._session_owners),
        }
        store, owners = owned[collection]
        gone = store.sweep(now)
        for key, _ in gone:
            owners.discard(key)
        return len(gone)

    def _client_expiry(self, client: RegisteredClient) -> float:
        if self._unused_client_ttl is None:
            return math.inf
        base = client.created_at if client.last_used_at is None else client.last_used_at
        return max(base, client.created_at) + self._unused_client_ttl

    # -- clients ---------------------------------------------------------------
    def add_client(self, client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict the oldest never-used client (StorageFull if none)."""
        key = client.client_id
        if self._full("clients", self._clients, key):
            victim = self._never_used.victim(client.owner)
            if victim is None:
                return defer.fail(self._refuse("clients", None))
            self._clients.pop(victim[0])
            self._never_used.discard(victim[0])
            self._count_eviction("clients")
        self._clients.set(key, detached(client), self._client_expiry(client))
        if client.last_used_at is None:
            self._never_used.add(key, client.owner)
        else:
            self._never_used.discard(key)
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
            self._never_used.discard(client_id)
        return defer.succeed(None)

    # -- pending authorizations -------------------------------------------------
    def put_pending(self, pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at; at the cap, the oldest login in
        progress of the owner holding the most goes (the newcomer's own when it holds as many)."""
        self._put_owned(
            "pending",
            self._pending,
            self._pending_owners,
            pending.state,
            pending.owner,
            detached(pending),
            pending.expires_at,
        )
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
        self._pending_owners.discard(state)
        return defer.succeed(pending)

    # -- authorization codes ----------------------------------------------------
    def put_code(self, code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""
        self._put_owned(
            "codes",
            self._codes,
            self._code_owners,
            code.code_id,
            code.user_id,
            detached(code),
            code.expires_at,
        )
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
    # Issuance at a full cap: the family or refresh token that could go, else None.
    def _family_victim(self, client_id: str) -> str | None:
        if self._revoked_families:
            return next(iter(self._revoked_families))
        victim = self._family_owners.victim(client_id)
        if victim is None or victim[1] != client_id or self._family_owners.count(client_id) < 2:
            return None  # another client's family, or this client's only one: never
        return victim[0]

    def _refresh_token_victim(self, client_id: str) -> str | None:
        victim = self._rotated.victim(client_id)
        return None if victim is None else victim[0]

    def issuance_room(self, client_id: str, new_family: bool) -> Deferred[None]:
        """Fail with StorageFull when one more issuance for ``client_id`` cannot be stored.

        A full deny list refuses every issuance: a revocation is never forgotten, so new
        access tokens wait until revoked ones expire (at most an access-token lifespan).
        """
        checks: list[tuple[str, _ExpiringMap[str, Any], Callable[[str], str | None]]] = [
            ("revoked_jtis", self._revoked_jtis, lambda _: None),
            ("refresh_tokens", self._refresh_tokens, self._refresh_token_victim),
        ]
        if new_family:
            checks.append(("families", self._families, self._family_victim))
        for collection, store, victim in checks:
            if self._full(collection, store, "") and victim(client_id) is None:
                return defer.fail(self._refuse(collection, store))
        return defer.succeed(None)

    def put_family(self, family: TokenFamily) -> Deferred[None]:
        """Store a new token family; StorageFull when only other clients' families could go."""
        if self._full("families", self._families, family.family_id):
            victim = self._family_victim(family.client_id)
            if victim is None:
                return defer.fail(self._refuse("families", self._families))
            if victim not in self._revoked_families:
                self._count_eviction("families")
            self._families.pop(victim)
            self._forget_family(victim)
        self._families.set(
            family.family_id, attrs.evolve(family, access_token_jtis=()), family.expires_at
        )
        self._family_jtis[family.family_id] = dict(family.access_token_jtis)
        self._family_owners.add(family.family_id, family.client_id)
        if family.revoked:
            self._revoked_families[family.family_id] = None
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
        self._revoked_families[family_id] = None  # nothing left to lose: evicted first
        for jti, exp in self._family_jtis.get(family_id, {}).items():
            self._revoke_jti(jti, exp, now)
        self._generation += 1
        return defer.succeed(self._with_jtis(family))

    def put_refresh_token(self, token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at; at the cap, a rotated token (by client) makes room,
        and StorageFull when there is none: a current refresh token is never evicted."""
        if self._full("refresh_tokens", self._refresh_tokens, token.token_id):
            victim = self._refresh_token_victim(token.client_id)
            if victim is None:
                return defer.fail(self._refuse("refresh_tokens", self._refresh_tokens))
            evicted = self._refresh_tokens.pop(victim)
            if evicted is not None:
                self._forget_refresh_token(victim, evicted.family_id)
            self._count_eviction("refresh_tokens")
        self._refresh_tokens.set(token.token_id, detached(token), token.expires_at)
        self._family_tokens.setdefault(token.family_id, set()).add(token.token_id)
        if token.rotated_at is not None:
            self._rotated.add(token.token_id, token.client_id)
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
        self._rotated.add(token_id, token.client_id)
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
        self._put_owned(
            "upstream_sessions",
            self._upstream_sessions,
            self._session_owners,
            session.tsid,
            f"{session.upstream_name}\0{session.subject}",  # by user: a login flood costs its own
            detached(session),
            session.expires_at,
        )
        return defer.succeed(None)

    def get_upstream_session(self, tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""
        session = self._upstream_sessions.get(tsid, self._now())
        return defer.succeed(None if session is None else detached(session))

    def delete_upstream_session(self, tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""
        self._upstream_sessions.pop(tsid)
        self._session_owners.discard(tsid)
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
        # Never evicted: past the cap only expired entries go, and issuance_room refuses new
        # access tokens until the list is below its cap again.
        self._full("revoked_jtis", self._revoked_jtis, jti)
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
        for collection in self._caps:
            if collection != "users":
                removed += self._sweep_collection(collection, now)
        for collection, count in sorted(self._evictions.items()):
            self.log.warn(
                "Evicted {count} live entries from {collection} at its cap of {cap}",
                count=count,
                collection=collection,
                cap=self._caps[collection],
            )
        for collection, count in sorted(self._refused.items()):
            self.log.warn(
                "Refused {count} requests: {collection} full at its cap of {cap}",
                count=count,
                collection=collection,
                cap=self._caps[collection],
            )
        self._evictions.clear()
        self._refused.clear()
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
