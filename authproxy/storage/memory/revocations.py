"""MemoryRevocations: the access-token deny list in process memory."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.memory.expiring import ExpiringMap
from authproxy.storage.memory.ledger import CapLedger
from authproxy.storage.revocations import IRevocations


@implementer(IRevocations)
class MemoryRevocations:
    """Revoked jtis, kept ``leeway`` seconds past their exp because the guard accepts a token
    that long after its exp (clock-skew leeway).

    Never evicted before then: the deny list may exceed its cap by the access tokens already
    issued, while token issuance is refused (see ``MemoryTokenFamilies.issuance_room``).
    ``generation`` is a plain attribute: one process, so every revocation is known at once.
    """

    def __init__(self, ledger: CapLedger, cap: int, leeway: float) -> None:
        self._ledger = ledger
        self.leeway = leeway
        self.generation = 0
        self.revoked: ExpiringMap[str, None] = ExpiringMap()
        ledger.register("revoked_jtis", cap, self.revoked, lambda now: len(self.revoked.sweep(now)))

    def deny(self, jti: str, exp: float, now: float) -> bool:
        """Deny-list until exp plus leeway, without bumping the generation; True when the
        deny list changed."""
        until = exp + self.leeway
        if until <= now:
            return False  # the guard refuses this token anyway
        known = self.revoked.expires_at(jti)
        if known is not None and known >= until:
            return False  # already deny-listed at least that long
        # Never evicted: past the cap only expired entries go, and issuance_room refuses new
        # access tokens until the list is below its cap again.
        self._ledger.full("revoked_jtis", self.revoked, jti)
        self.revoked.set(jti, None, until)
        return True

    def revoke_jti(self, jti: str, exp: float) -> Deferred[None]:
        """Deny-list an access token id until its exp.

        The revocation generation is bumped whenever the deny list changes.
        """
        if self.deny(jti, exp, self._ledger.now()):
            self.generation += 1
        return defer.succeed(None)

    def is_jti_revoked(self, jti: str) -> Deferred[bool]:
        """True while the jti is deny-listed."""
        expires_at = self.revoked.expires_at(jti)
        return defer.succeed(expires_at is not None and expires_at > self._ledger.now())
