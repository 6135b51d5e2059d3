"""IAuthorizationCodes: issued authorization codes, redeemable once."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from authproxy.storage.models import AuthorizationCode


class IAuthorizationCodes(Interface):
    """Authorization codes until their expiry; a redeemed code is kept to detect replay."""

    def put_code(code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""

    def redeem_code(code_id: str) -> Deferred[AuthorizationCode | None]:
        """Mark redeemed; returns the record as it was *before* (``redeemed`` True means replay).

        Atomic: of two concurrent redemptions exactly one sees ``redeemed`` False."""

    def set_code_family(code_id: str, family_id: str) -> Deferred[None]:
        """Remember which token family the first redemption created (for replay revocation)."""
