"""IRevocations: the access-token deny list (RFC 7009) and the signal that it changed.

The guard caches verified access tokens, and must learn of a revocation without asking the
store on every request. The contract:

- ``generation`` is an int read synchronously (no I/O) on every guarded request. The
  implementation changes it whenever it learns of a revocation: at once for its own
  ``revoke_jti`` (and a family revocation), and, for a networked store, when another process
  tells it (a pub/sub message or a keyspace notification bumps it locally). It never goes
  back to a value it had.
- A cached verification remembers the generation it was checked at; while the generation is
  unchanged it is trusted as is. Once it changed, the guard asks ``is_jti_revoked`` (the only
  round trip) and caches the answer with the new generation.
- A networked implementation that loses its subscription must bump ``generation`` when it
  reconnects (it may have missed messages), so that every cached verification re-checks.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


class IRevocations(Interface):
    """Deny-listed access-token ids until their exp, and a generation counter over them."""

    generation = Attribute(
        "int: changes whenever a revocation becomes known here (read synchronously)."
    )

    def revoke_jti(jti: str, exp: float) -> Deferred[None]:
        """Deny-list an access token id until its exp. Never forgotten before then: a full
        deny list makes issuance refuse (``ITokenFamilies.issuance_room``), it never evicts a
        live revocation."""

    def is_jti_revoked(jti: str) -> Deferred[bool]:
        """True while the jti is deny-listed."""
