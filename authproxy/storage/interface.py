"""IStorage: everything the authorization server, upstream federation and guard persist.

Every method returns a Deferred so that a networked backend (Redis) can implement the
same interface. Implementations copy values in and out: callers never share state.
Expired records are invisible (``get`` answers None) even before a sweep removes them.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from authproxy.storage.models import (
    AuthorizationCode,
    PendingAuthorization,
    RefreshToken,
    RegisteredClient,
    TokenFamily,
    UpstreamTokenSession,
)


class StorageFull(Exception):
    """A collection reached its configured cap and nothing could be evicted.

    ``collection`` names it (a metric label); ``retry_after`` is a hint in seconds for the
    client (when entries expire), or None.
    """

    def __init__(self, message: str, collection: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.collection = collection
        self.retry_after = retry_after


class IStorage(Interface):
    clock = Attribute("IReactorTime giving the current time for expiry.")

    # -- clients (RFC 7591) -------------------------------------------------
    def add_client(client: RegisteredClient) -> Deferred[None]:
        """Store a new client; at the cap, evict a never-used client, the oldest of the owner
        holding the most (StorageFull if none): used clients are never evicted."""

    def get_client(client_id: str) -> Deferred[RegisteredClient | None]:
        """The client, or None when unknown or expired for lack of use."""

    def touch_client(client_id: str) -> Deferred[None]:
        """Record a use: sets last_used_at and renews the unused-client expiry."""

    # -- pending authorizations --------------------------------------------
    def put_pending(pending: PendingAuthorization) -> Deferred[None]:
        """Store under pending.state until pending.expires_at; at the cap, the oldest of the
        owner (pending.owner) holding the most goes first, never another owner's before."""

    def get_pending(state: str) -> Deferred[PendingAuthorization | None]:
        """Read without consuming (the consent page)."""

    def update_pending(pending: PendingAuthorization) -> Deferred[None]:
        """Replace an existing pending authorization (same state)."""

    def take_pending(state: str) -> Deferred[PendingAuthorization | None]:
        """Read and delete: a state can complete the flow once."""

    # -- authorization codes -----------------------------------------------
    def put_code(code: AuthorizationCode) -> Deferred[None]:
        """Store until code.expires_at."""

    def redeem_code(code_id: str) -> Deferred[AuthorizationCode | None]:
        """Mark redeemed; returns the record as it was *before* (``redeemed`` True means replay)."""

    def set_code_family(code_id: str, family_id: str) -> Deferred[None]:
        """Remember which token family the first redemption created (for replay revocation)."""

    # -- refresh tokens and token families ---------------------------------
    def issuance_room(client_id: str, new_family: bool) -> Deferred[None]:
        """Fail with StorageFull when one more token issuance for ``client_id`` (a new token
        family when ``new_family``) could not be stored without forgetting a live revocation
        or evicting another client's refresh-token family. Called before anything changes."""

    def put_family(family: TokenFamily) -> Deferred[None]:
        """Store a new token family; StorageFull rather than evict another client's live one."""

    def get_family(family_id: str) -> Deferred[TokenFamily | None]:
        """The family, or None."""

    def add_family_access_token(family_id: str, jti: str, exp: float) -> Deferred[None]:
        """Record an access token issued in the family, so revoking the family revokes it."""

    def revoke_family(family_id: str) -> Deferred[TokenFamily | None]:
        """Mark the family revoked, deny-list its access tokens; returns the family (or None)."""

    def put_refresh_token(token: RefreshToken) -> Deferred[None]:
        """Store until token.expires_at; StorageFull rather than evict a current (unrotated)
        refresh token."""

    def get_refresh_token(token_id: str) -> Deferred[RefreshToken | None]:
        """The token record, or None."""

    def mark_rotated(
        token_id: str, rotated_at: float, successor_response: dict[str, object]
    ) -> Deferred[bool]:
        """Record the rotation; False when it was already rotated (lost the race)."""

    # -- users -------------------------------------------------------------
    def user_id_for(upstream_name: str, upstream_subject: str) -> Deferred[str]:
        """The stable internal user id for an upstream identity, created on first sight."""

    # -- upstream token sessions --------------------------------------------
    def put_upstream_session(session: UpstreamTokenSession) -> Deferred[None]:
        """Store (or replace) under session.tsid until session.expires_at."""

    def get_upstream_session(tsid: str) -> Deferred[UpstreamTokenSession | None]:
        """The session, or None."""

    def delete_upstream_session(tsid: str) -> Deferred[None]:
        """Forget the session (ended upstream or revoked)."""

    # -- access-token deny list (RFC 7009) -----------------------------------
    def revoke_jti(jti: str, exp: float) -> Deferred[None]:
        """Deny-list an access token id until its exp. Never forgotten before then: a full
        deny list makes ``issuance_room`` refuse, it never evicts a live revocation."""

    def is_jti_revoked(jti: str) -> Deferred[bool]:
        """True while the jti is deny-listed."""

    def revocation_generation() -> int:
        """A counter bumped on every revocation, so caches of verified tokens can re-check."""
