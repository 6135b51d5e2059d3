"""The login cookie: a login in progress belongs to the browser that was sent to the IdP.

Without it, anyone could start (and approve) an authorization for their own client in their
own browser, send the link to the identity provider to a victim, and receive the code for
the victim's login at their redirect URI. So, when authproxy sends a browser upstream (after
the consent page, with remembered consent, or with ``consent = "skip"`` alike), it sets a
cookie bound to that pending authorization, and ``/oauth/callback`` only continues a login
whose cookie the returning browser presents.

One cookie per pending authorization (several sign-ins may be open in tabs), named after a
short hash of its internal state; its value is an HMAC-SHA256 of the state by the ring's
active secret (any secret still in the ring verifies it). It lives as long as the pending
authorization, is HttpOnly and ``SameSite=Lax`` (the IdP's redirect back is a cross-site
top-level navigation, which Lax allows), and has the ``__Host-`` prefix on https.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol
from urllib.parse import urlsplit

import attrs
from twisted.web.server import Request

from authproxy.tokens import b64url

_LABEL = b"authproxy login v1\x00"


class HMACSecrets(Protocol):
    """The part of ``keys.KeyRing`` the consent and login cookies use."""

    @property
    def active_hmac_secret(self) -> bytes: ...

    @property
    def hmac_secrets(self) -> tuple[bytes, ...]: ...


def short_hash(value: str) -> str:
    """A cookie-name-safe digest of ``value`` that does not reveal it."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16]


def cookie_prefix(secure: bool) -> str:
    """``__Host-`` (Secure, Path=/, no Domain: no sibling subdomain can plant or overwrite the
    cookie) on https; nothing on http loopback, where browsers refuse Secure cookies."""
    return "__Host-" if secure else ""


@attrs.frozen
class LoginBinding:
    """Sets, checks and clears the login cookie of one pending authorization."""

    ring: HMACSecrets
    secure: bool

    @classmethod
    def for_public_url(cls, public_url: str, ring: HMACSecrets) -> LoginBinding:
        """Cookies as the browser will see them at ``public_url``."""
        return cls(ring, urlsplit(public_url).scheme == "https")

    def name(self, state: str) -> str:
        """The cookie name for the pending authorization ``state``."""
        return f"{cookie_prefix(self.secure)}authproxy-login-{short_hash(state)}"

    def _mac(self, secret: bytes, state: str) -> bytes:
        return hmac.new(secret, _LABEL + state.encode("utf-8"), hashlib.sha256).digest()

    def value(self, state: str) -> str:
        """The cookie value for ``state`` (signed by the active secret)."""
        return b64url(self._mac(self.ring.active_hmac_secret, state))

    def bind(self, request: Request, state: str, max_age: float) -> None:
        """Bind the pending authorization ``state`` to this browser for ``max_age`` seconds."""
        self._set(request, state, self.value(state), max(1, int(max_age)))

    def is_bound(self, request: Request, state: str) -> bool:
        """Whether this browser holds the login cookie of ``state`` (constant-time check)."""
        raw = request.getCookie(self.name(state).encode("ascii"))
        if not raw:
            return False
        matched = False
        for secret in self.ring.hmac_secrets:
            # No early exit: timing does not tell which secret matched. Compared as bytes:
            # compare_digest refuses a str with non-ASCII characters (a hostile cookie).
            expected = b64url(self._mac(secret, state)).encode("ascii")
            matched |= hmac.compare_digest(raw, expected)
        return matched

    def clear(self, request: Request, state: str) -> None:
        """Drop the login cookie of a finished pending authorization."""
        self._set(request, state, "", 0)

    def _set(self, request: Request, state: str, value: str, max_age: int) -> None:
        request.addCookie(
            self.name(state),
            value,
            max_age=str(max_age),
            path="/",
            secure=self.secure,
            httpOnly=True,
            sameSite="lax",
        )
