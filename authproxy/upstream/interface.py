"""The seam between the authorization server, the upstream IdP client and the proxy.

The authorization server asks an IUpstreamProvider to log the user in; the proxy asks it
for the user's upstream access token. Neither knows which IdP (OIDC, OAuth2, development)
sits behind it.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.web.resource import IResource
from zope.interface import Attribute, Interface

from authproxy.storage.models import PendingAuthorization


@attrs.frozen
class UpstreamLogin:
    """Where to send the browser, and the per-login secrets to keep in the pending authorization."""

    url: str
    code_verifier: str
    nonce: str


@attrs.frozen
class UpstreamIdentity:
    """Who logged in, and the token session (tsid) holding their upstream tokens."""

    subject: str
    tsid: str
    name: str | None = None
    email: str | None = None
    email_verified: bool | None = None  # None: the IdP did not say
    preferred_username: str | None = None


class UpstreamError(Exception):
    """The upstream IdP failed (network, bad response, invalid id_token). Message is safe to show."""


class UpstreamDenied(UpstreamError):
    """The IdP (or the user) refused the login."""


class UpstreamUnavailable(UpstreamError):
    """A transient failure (timeout, 5xx, metadata not yet fetched): try again later."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UpstreamSessionEnded(UpstreamError):
    """The upstream token session is gone or its refresh was refused: the user must log in again."""


class IUpstreamProvider(Interface):
    name = Attribute("The configured upstream name (part of the stable user id).")

    def start_login(state: str) -> UpstreamLogin:
        """The IdP authorization URL for the pending authorization ``state``.

        Raises UpstreamUnavailable while the IdP metadata is not known yet.
        """

    def check_reachable() -> Deferred[None]:
        """Fires when the IdP's login page can be reached; fails with UpstreamUnavailable.

        Called before the browser is redirected, so an IdP outage shows authproxy's error
        page instead of the browser's connection error.
        """

    def finish_login(
        args: Mapping[str, str], pending: PendingAuthorization
    ) -> Deferred[UpstreamIdentity]:
        """Complete the login from the callback's query ``args`` (code, state, ...).

        Exchanges the code with the verifier and nonce kept in ``pending``, verifies the
        identity, stores the upstream tokens in a new token session and returns its identity.
        Fails with UpstreamDenied, UpstreamUnavailable or UpstreamError.
        """

    def upstream_access_token(tsid: str) -> Deferred[str]:
        """A valid upstream access token for the session, refreshed first if (nearly) expired.

        Concurrent callers for one tsid share one refresh. Fails with UpstreamSessionEnded
        (re-authenticate) or UpstreamUnavailable (transient).
        """

    def refresh_upstream_token(tsid: str, rejected: str) -> Deferred[str]:
        """A new upstream access token for the session, whose token ``rejected`` the backend
        refused: refreshed even when it looks fresh (unless another request already replaced
        it). Fails like ``upstream_access_token``."""

    def end_session(tsid: str) -> Deferred[None]:
        """Forget the session's upstream tokens; an IdP with an RFC 7009 endpoint is also
        asked to revoke them (in the background: the Deferred does not wait for the IdP)."""

    def readiness() -> tuple[bool, str]:
        """(ready, detail): False until the IdP metadata was fetched once."""

    def routes() -> Mapping[str, IResource]:
        """Extra paths this provider serves itself (the development login page); usually empty."""
