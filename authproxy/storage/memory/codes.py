"""MemoryAuthorizationCodes: authorization codes in process memory."""

from __future__ import annotations

from functools import partial

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.codes import IAuthorizationCodes
from authproxy.storage.fairness import OwnerIndex
from authproxy.storage.memory.expiring import ExpiringMap, detached
from authproxy.storage.memory.ledger import CapLedger, sweep_owned
from authproxy.storage.models import AuthorizationCode


@implementer(IAuthorizationCodes)
class MemoryAuthorizationCodes:
    """Codes until their expiry; at the cap, evicted by user (a login flood costs its own)."""

    def __init__(self, ledger: CapLedger, cap: int) -> None:
        self._ledger = ledger
        self._codes: ExpiringMap[str, AuthorizationCode] = ExpiringMap()
        self._owners = OwnerIndex()  # by user
        self._put = partial(ledger.put_owned, "codes", self._codes, self._owners)
        ledger.register("codes", cap, self._codes, sweep_owned(self._codes, self._owners))

    def put_code(self, code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""
        self._put(code.code_id, code.user_id, detached(code), code.expires_at)
        return defer.succeed(None)

    def redeem_code(self, code_id: str) -> Deferred[AuthorizationCode | None]:
        """Mark redeemed; returns the record as it was *before* (``redeemed`` True means replay)."""
        code = self._codes.get(code_id, self._ledger.now())
        if code is not None and not code.redeemed:
            self._codes.replace_value(code_id, attrs.evolve(code, redeemed=True))
        return defer.succeed(code)

    def set_code_family(self, code_id: str, family_id: str) -> Deferred[None]:
        """Remember which token family the first redemption created (for replay revocation)."""
        code = self._codes.get(code_id, self._ledger.now())
        if code is not None:
            self._codes.replace_value(code_id, attrs.evolve(code, family_id=family_id))
        return defer.succeed(None)
