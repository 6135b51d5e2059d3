"""MemoryTokenFamilies: token families and their refresh tokens in process memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.families import ITokenFamilies
from authproxy.storage.memory.expiring import ExpiringMap, copy_json, detached
from authproxy.storage.memory.ledger import CapLedger
from authproxy.storage.memory.revocations import MemoryRevocations
from authproxy.storage.models import RefreshToken, TokenFamily


@implementer(ITokenFamilies)
class MemoryTokenFamilies:
    """Families and refresh tokens, bounded without ever forgetting what protects a user.

    - refresh tokens: only rotated ones (kept to detect reuse) can be evicted, by client; a
      current refresh token is never evicted.
    - token families: a revoked family first, else the requesting client's oldest when it
      holds the most families and more than one; a client's only family (another user's
      login) is never evicted.

    Revoking a family deny-lists its access tokens in ``revocations``.
    """

    def __init__(
        self,
        ledger: CapLedger,
        revocations: MemoryRevocations,
        *,
        max_refresh_tokens: int,
        max_families: int,
    ) -> None:
        self._ledger = ledger
        self._revocations = revocations
        self._refresh_tokens: ExpiringMap[str, RefreshToken] = ExpiringMap()
        self._rotated = OwnerIndex()  # rotated refresh tokens by client: the eviction candidates
        self._family_tokens: dict[str, set[str]] = {}  # family -> its refresh token ids
        self._families: ExpiringMap[str, TokenFamily] = ExpiringMap()
        self._family_owners = OwnerIndex()  # families by client
        self._revoked_families: OrderedDict[str, None] = OrderedDict()
        # (jti -> exp) per family, beside the records: a refresh adds one in O(1) instead of
        # rebuilding the family record (whose jti list grows with every rotation).
        self._family_jtis: dict[str, dict[str, float]] = {}
        self._family_jtis_pruned_at: dict[str, int] = {}
        ledger.register(
            "refresh_tokens", max_refresh_tokens, self._refresh_tokens, self._sweep_tokens
        )
        ledger.register("families", max_families, self._families, self._sweep_families)

    def _sweep_tokens(self, now: float) -> int:
        gone = self._refresh_tokens.sweep(now)
        for token_id, token in gone:
            self._forget_refresh_token(token_id, token.family_id)
        return len(gone)

    def _sweep_families(self, now: float) -> int:
        gone = self._families.sweep(now)
        for family_id, _ in gone:
            self._forget_family(family_id)
        return len(gone)

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
        checks: list[tuple[str, ExpiringMap[str, Any], Callable[[str], str | None]]] = [
            ("revoked_jtis", self._revocations.revoked, lambda _: None),
            ("refresh_tokens", self._refresh_tokens, self._refresh_token_victim),
        ]
        if new_family:
            checks.append(("families", self._families, self._family_victim))
        for collection, store, victim in checks:
            if self._ledger.full(collection, store, "") and victim(client_id) is None:
                return defer.fail(self._ledger.refuse(collection, store))
        return defer.succeed(None)

    def put_family(self, family: TokenFamily) -> Deferred[None]:
        """Store a new token family; StorageFull when only other clients' families could go."""
        if self._ledger.full("families", self._families, family.family_id):
            victim = self._family_victim(family.client_id)
            if victim is None:
                return defer.fail(self._ledger.refuse("families", self._families))
            if victim not in self._revoked_families:
                self._ledger.count_eviction("families")
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
        family = self._families.get(family_id, self._ledger.now())
        return defer.succeed(None if family is None else self._with_jtis(family))

    def is_family_live(self, family_id: str) -> Deferred[bool]:
        """Whether the family exists and is not revoked."""
        family = self._families.get(family_id, self._ledger.now())
        return defer.succeed(family is not None and not family.revoked)

    def _with_jtis(self, family: TokenFamily) -> TokenFamily:
        jtis = self._family_jtis.get(family.family_id, {})
        return attrs.evolve(family, access_token_jtis=tuple(jtis.items()))

    def add_family_access_token(self, family_id: str, jti: str, exp: float) -> Deferred[None]:
        """Record an access token issued in the family, so revoking the family revokes it.

        Access tokens past their exp (and leeway) are dropped from the list, so it stays as
        short as the number of live access tokens. A jti added to an already revoked family
        is deny-listed at once.
        """
        now = self._ledger.now()
        family = self._families.get(family_id, now)
        if family is None:
            return defer.succeed(None)
        jtis = self._family_jtis.setdefault(family_id, {})
        jtis[jti] = exp
        # Drop expired entries whenever the table doubled since the last pruning: O(1)
        # amortized per added token, and the table stays proportional to live tokens.
        if len(jtis) > 2 * self._family_jtis_pruned_at.get(family_id, 0) + 16:
            for old_jti, old_exp in list(jtis.items()):
                if old_exp + self._revocations.leeway <= now:
                    del jtis[old_jti]
            self._family_jtis_pruned_at[family_id] = len(jtis)
        if family.revoked:
            self._revocations.deny(jti, exp, now)
        return defer.succeed(None)

    def revoke_family(self, family_id: str) -> Deferred[TokenFamily | None]:
        """Mark the family revoked, deny-list its access tokens; returns the family (or None)."""
        now = self._ledger.now()
        family = self._families.get(family_id, now)
        if family is None:
            return defer.succeed(None)
        family = attrs.evolve(family, revoked=True)
        self._families.replace_value(family_id, family)
        self._revoked_families[family_id] = None  # nothing left to lose: evicted first
        for jti, exp in self._family_jtis.get(family_id, {}).items():
            self._revocations.deny(jti, exp, now)
        self._revocations.generation += 1
        return defer.succeed(self._with_jtis(family))

    def put_refresh_token(self, token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at; at the cap, a rotated token (by client) makes room,
        and StorageFull when there is none: a current refresh token is never evicted."""
        if self._ledger.full("refresh_tokens", self._refresh_tokens, token.token_id):
            victim = self._refresh_token_victim(token.client_id)
            if victim is None:
                return defer.fail(self._ledger.refuse("refresh_tokens", self._refresh_tokens))
            evicted = self._refresh_tokens.pop(victim)
            if evicted is not None:
                self._forget_refresh_token(victim, evicted.family_id)
            self._ledger.count_eviction("refresh_tokens")
        self._refresh_tokens.set(token.token_id, detached(token), token.expires_at)
        self._family_tokens.setdefault(token.family_id, set()).add(token.token_id)
        if token.rotated_at is not None:
            self._rotated.add(token.token_id, token.client_id)
        return defer.succeed(None)

    def get_refresh_token_in_family(
        self, token_id: str
    ) -> Deferred[tuple[RefreshToken, bool] | None]:
        """The token record and whether its family is live, or None."""
        token = self._refresh_tokens.get(token_id, self._ledger.now())
        if token is None:
            return defer.succeed(None)
        family = self._families.get(token.family_id, self._ledger.now())
        return defer.succeed((detached(token), family is not None and not family.revoked))

    def get_refresh_token(self, token_id: str) -> Deferred[RefreshToken | None]:
        """The token record, or None."""
        token = self._refresh_tokens.get(token_id, self._ledger.now())
        return defer.succeed(None if token is None else detached(token))

    def mark_rotated(
        self, token_id: str, rotated_at: float, successor_response: dict[str, object]
    ) -> Deferred[bool]:
        """Record the rotation; False when it was already rotated (lost the race) or is gone."""
        token = self._refresh_tokens.get(token_id, self._ledger.now())
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
