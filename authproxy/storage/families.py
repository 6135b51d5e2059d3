"""ITokenFamilies: refresh-token families and their refresh tokens (rotation, reuse detection).

A family is one login's chain of refresh tokens; revoking it deny-lists the access tokens it
issued, through the revocations of the same storage (one atomic step in a networked store).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from authproxy.storage.models import RefreshToken, TokenFamily


class ITokenFamilies(Interface):
    """Token families, the refresh tokens in them, and room for new issuances."""

    def issuance_room(client_id: str, new_family: bool) -> Deferred[None]:
        """Fail with StorageFull when one more token issuance for ``client_id`` (a new token
        family when ``new_family``) could not be stored without forgetting a live revocation
        or evicting another client's refresh-token family. Called before anything changes."""

    def put_family(family: TokenFamily) -> Deferred[None]:
        """Store a new token family; StorageFull rather than evict another client's live one."""

    def get_family(family_id: str) -> Deferred[TokenFamily | None]:
        """The family, or None."""

    def is_family_live(family_id: str) -> Deferred[bool]:
        """Whether the family exists and is not revoked: what a refresh grant checks, without
        reading the family's access tokens (a list that grows with every rotation)."""

    def add_family_access_token(family_id: str, jti: str, exp: float) -> Deferred[None]:
        """Record an access token issued in the family, so revoking the family revokes it."""

    def revoke_family(family_id: str) -> Deferred[TokenFamily | None]:
        """Mark the family revoked, deny-list its access tokens; returns the family (or None)."""

    def put_refresh_token(token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at; StorageFull rather than evict a current (unrotated)
        refresh token."""

    def get_refresh_token(token_id: str) -> Deferred[RefreshToken | None]:
        """The token record, or None."""

    def get_refresh_token_in_family(token_id: str) -> Deferred[tuple[RefreshToken, bool] | None]:
        """The token record and whether its family is live (:meth:`is_family_live`), or
        None: what a refresh grant reads, in one step (on Redis one round trip)."""

    def mark_rotated(
        token_id: str, rotated_at: float, successor_response: dict[str, object]
    ) -> Deferred[bool]:
        """Record the rotation; False when it was already rotated (lost the race)."""
