"""The consent step between ``/oauth/authorize`` and the upstream IdP, and ``/oauth/consent``.

authproxy uses one registration at the upstream IdP for every MCP client that registers
with it (the MCP "confused deputy" setup). Without a consent step, a malicious client could
ride a user's existing IdP session and receive a code silently. So, before the hand-off to
the IdP, the user sees which application asks (its self-declared name and where it sends
them back) and approves or denies.

Forgery protection: the consent form carries a CSRF token stored in the pending
authorization *and* set as a SameSite=Strict cookie in the browser that was shown the page.
A POST must present the pending's state, the matching token and the matching cookie: an
attacker who starts an authorization of their own learns a valid state and token, but cannot
make a victim's browser send the cookie that goes with them.

Remembered consent (``auth_server.consent = "remember"``) is one cookie per client, named
after a short hash of the client_id (for a client ID metadata document, its URL: consent is
remembered per document URL). Its value ``1.<expiry>.<grant>.<mac>`` holds the expiry,
the approved resource and scopes (``grant``, base64url) and an HMAC-SHA256 by the ring's
active secret over client_id, expiry and grant; it is accepted while unexpired, when any
secret still in the ring verifies it, for the same resource and a subset of the approved
scopes. On an https public URL cookies are ``Secure`` with the ``__Host-`` prefix; on http
loopback (where browsers refuse Secure cookies) they have a plain name.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver.authorize import error_redirect_uri
from authproxy.authserver.cimd.url import document_host
from authproxy.authserver.login_binding import HMACSecrets, cookie_prefix, short_hash
from authproxy.config import Config
from authproxy.http.errors import BadHeader, HTMLPageError
from authproxy.http.forms import FormReader, PageRefusals
from authproxy.http.pages import ConsentView, render_consent
from authproxy.http.request_headers import header_text
from authproxy.http.resource import AsyncResource
from authproxy.http.responses import redirect
from authproxy.storage.logins import ILogins
from authproxy.storage.models import PendingAuthorization, RegisteredClient
from authproxy.tokens import b64url, b64url_decode

log = Logger()

# The consent form has three short fields; anything larger is not our form.
MAX_CONSENT_BODY = 8 * 1024

_REMEMBER_LABEL = b"authproxy consent v1\x00"


class _Clock(Protocol):
    def seconds(self) -> float: ...


ContinueToUpstream = Callable[[Request, PendingAuthorization], Awaitable[bytes | None]]


@attrs.frozen
class ConsentCookies:
    """Names, signing and checking of the consent cookies (remembered consent and CSRF)."""

    ring: HMACSecrets
    clock: _Clock
    lifespan: float
    secure: bool

    @classmethod
    def from_config(cls, config: Config, ring: HMACSecrets, clock: _Clock) -> ConsentCookies:
        secure = urlsplit(config.server.public_url).scheme == "https"
        return cls(ring, clock, config.auth_server.consent_lifespan, secure)

    @property
    def _prefix(self) -> str:
        return cookie_prefix(self.secure)

    def remember_name(self, client_id: str) -> str:
        """The remembered-consent cookie of one client."""
        return f"{self._prefix}authproxy-consent-{short_hash(client_id)}"

    def csrf_name(self, state: str) -> str:
        """The CSRF cookie of one pending authorization (several may be open in tabs)."""
        return f"{self._prefix}authproxy-csrf-{short_hash(state)}"

    def _mac(self, secret: bytes, client_id: str, expiry: int, grant: bytes) -> bytes:
        message = b"\x00".join(
            [_REMEMBER_LABEL + client_id.encode("utf-8"), str(expiry).encode("ascii"), grant]
        )
        return hmac.new(secret, message, hashlib.sha256).digest()

    @staticmethod
    def _grant(scopes: Sequence[str], resource: str, redirect_uri: str) -> bytes:
        # The redirect URI is part of what was consented to: a metadata document may change
        # its redirect_uris while consent is remembered, and codes must not follow silently.
        parts = [resource, " ".join(sorted(set(scopes))), redirect_uri]
        return "\n".join(parts).encode("utf-8")

    def remember_value(
        self, client_id: str, scopes: Sequence[str], resource: str, redirect_uri: str
    ) -> str:
        """A signed cookie value remembering consent until now + lifespan."""
        expiry = int(self.clock.seconds() + self.lifespan)
        grant = self._grant(scopes, resource, redirect_uri)
        mac = self._mac(self.ring.active_hmac_secret, client_id, expiry, grant)
        return f"1.{expiry}.{b64url(grant)}.{b64url(mac)}"

    def check_remembered(
        self, value: str, client_id: str, scopes: Sequence[str], resource: str, redirect_uri: str
    ) -> bool:
        """Whether ``value`` is a valid, unexpired consent of this client covering the request."""
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != "1" or not parts[1].isdigit():
            return False
        try:
            grant, mac = b64url_decode(parts[2]), b64url_decode(parts[3])
        except ValueError:
            return False
        expiry = int(parts[1])
        verified = False
        for secret in self.ring.hmac_secrets:
            # Check every secret (no early exit) so timing does not tell which one matched.
            verified |= hmac.compare_digest(mac, self._mac(secret, client_id, expiry, grant))
        if not verified or expiry <= self.clock.seconds():
            return False
        granted = grant.decode("utf-8", "replace").split("\n")
        if len(granted) != 3:  # a cookie from before redirect URIs were bound: ask again
            return False
        granted_resource, granted_scopes, granted_redirect = granted
        return (
            granted_resource == resource
            and granted_redirect == redirect_uri
            and set(scopes) <= set(granted_scopes.split())
        )

    def remembered(self, request: Request, pending: PendingAuthorization) -> bool:
        """Whether the browser holds a valid remembered consent for this request."""
        raw = request.getCookie(self.remember_name(pending.client_id).encode("ascii"))
        if not raw:
            return False
        value = raw.decode("ascii", "replace")
        return self.check_remembered(
            value, pending.client_id, pending.scopes, pending.resource, pending.redirect_uri
        )

    def remember(self, request: Request, pending: PendingAuthorization) -> None:
        """Set the remembered-consent cookie for this client and request."""
        value = self.remember_value(
            pending.client_id, pending.scopes, pending.resource, pending.redirect_uri
        )
        request.addCookie(
            self.remember_name(pending.client_id),
            value,
            max_age=str(int(self.lifespan)),
            path="/",
            secure=self.secure,
            httpOnly=True,
            sameSite="lax",
        )

    def set_csrf(self, request: Request, state: str, token: str, max_age: float) -> None:
        """Bind the consent form's token to this browser."""
        request.addCookie(
            self.csrf_name(state),
            token,
            max_age=str(max(1, int(max_age))),
            path="/",
            secure=self.secure,
            httpOnly=True,
            # Strict: a form posted from another site must not carry it.
            sameSite="strict",
        )

    def csrf_matches(self, request: Request, state: str, token: str) -> bool:
        """Whether the browser's CSRF cookie for ``state`` equals ``token`` (constant time)."""
        raw = request.getCookie(self.csrf_name(state).encode("ascii"))
        return raw is not None and hmac.compare_digest(raw, token.encode("utf-8"))

    def clear_csrf(self, request: Request, state: str) -> None:
        """Drop the CSRF cookie of a finished pending authorization."""
        request.addCookie(
            self.csrf_name(state),
            "",
            max_age="0",
            path="/",
            secure=self.secure,
            httpOnly=True,
            sameSite="strict",
        )


def expired_request_page() -> HTMLPageError:
    """The unknown or expired state page."""
    return HTMLPageError(
        400,
        "This sign-in request has expired",
        "The sign-in you are trying to continue is unknown to this server: it was already "
        "completed or cancelled, or it waited too long.",
        "Go back to your application and start signing in again.",
    )


def forged_request_page() -> HTMLPageError:
    """The CSRF failure page."""
    return HTMLPageError(
        403,
        "This approval could not be verified",
        "The approval did not come from the consent page this server showed in this browser, "
        "so it was not accepted. Nothing was shared.",
        "Go back to your application and start signing in again. If you did not start a "
        "sign-in, you can close this page.",
    )


def _bad_form_page(message: str) -> HTMLPageError:
    return HTMLPageError(
        400,
        "This approval could not be read",
        message,
        "Go back to your application and start signing in again.",
    )


class ConsentStep:
    """Decides, inside ``/oauth/authorize``, whether the user must see the consent page.

    ``begin`` is called once the request is valid and its PendingAuthorization stored. It
    returns None when no page is needed (``consent = "skip"``, or ``"remember"`` with a valid
    cookie for this client, resource and scopes): the caller then hands off to the IdP and
    must store the pending as ``consented=True``. Otherwise it stores a fresh CSRF token in
    the pending authorization, sets the matching cookie and returns the consent page (200).
    """

    def __init__(self, config: Config, logins: ILogins, ring: HMACSecrets, clock: _Clock):
        self.mode = config.auth_server.consent
        self.logins = logins
        self.clock = clock
        self.issuer = config.auth_server.issuer
        self.cookies = ConsentCookies.from_config(config, ring, clock)

    def would_ask(
        self, request: Request, pending: PendingAuthorization, client: RegisteredClient
    ) -> bool:
        """Whether :meth:`begin` would show the consent page for this request."""
        if self.mode == "skip":
            return False
        return not (self.mode == "remember" and self.cookies.remembered(request, pending))

    async def begin(
        self, request: Request, pending: PendingAuthorization, client: RegisteredClient
    ) -> bytes | None:
        """None to continue to the IdP at once, or the consent page's body."""
        if not self.would_ask(request, pending, client):
            if self.mode == "remember":
                log.info("Consent remembered for client {client_id}", client_id=client.client_id)
            return None
        token = secrets.token_urlsafe(32)
        await self.logins.update_pending(attrs.evolve(pending, csrf_token=token))
        self.cookies.set_csrf(
            request, pending.state, token, pending.expires_at - self.clock.seconds()
        )
        view = ConsentView(
            client_id=client.client_id,
            client_name=client.client_name,
            redirect_uri=pending.redirect_uri,
            scopes=pending.scopes,
            resource=pending.resource or self.issuer,
            state=pending.state,
            csrf_token=token,
            remember_for=self.cookies.lifespan if self.mode == "remember" else None,
            document_host=document_host(client.client_id),
        )
        return render_consent(request, view)


class ConsentResource(AsyncResource):
    """``POST /oauth/consent``: the user's decision (form fields state, csrf_token, decision).

    Approve marks the pending authorization consented, remembers it (``"remember"``) and
    calls ``continue_to_upstream(request, pending)``, which redirects to the IdP. Deny
    consumes the pending authorization and redirects to the client with ``access_denied``.
    """

    for_browsers = True

    def __init__(
        self,
        config: Config,
        logins: ILogins,
        ring: HMACSecrets,
        clock: _Clock,
        continue_to_upstream: ContinueToUpstream,
    ) -> None:
        super().__init__()
        self.mode = config.auth_server.consent
        self.logins = logins
        self.issuer = config.auth_server.issuer
        self.public_origin = _origin(config.server.public_url)
        self.cookies = ConsentCookies.from_config(config, ring, clock)
        self.continue_to_upstream = continue_to_upstream

    async def handle_GET(self, request: Request) -> bytes:
        # A reload or a bookmark of the form's target: explain in HTML rather than JSON.
        raise HTMLPageError(
            405,
            "Nothing to see here",
            "This address only receives the answer of the consent page.",
            "Go back to your application and start signing in again.",
            headers={"Allow": "POST"},
        )

    async def handle_POST(self, request: Request) -> bytes | None:
        try:
            origin = header_text(request, "Origin")
        except BadHeader:
            origin = "undecodable"  # no browser sends that: treated as a foreign origin
        # With Referrer-Policy no-referrer browsers send "Origin: null" on our own form posts.
        if origin is not None and origin not in ("null", self.public_origin):
            log.warn("Consent POST from foreign origin refused")
            raise forged_request_page()
        form = APPROVAL_FORM.read(request)
        state, token, decision = form.get("state"), form.get("csrf_token"), form.get("decision")
        if not state or token is None or decision is None:
            raise _bad_form_page("The approval form arrived incomplete.")
        pending = await self.logins.get_pending(state)
        if pending is None:
            raise expired_request_page()
        if not (
            pending.csrf_token
            and hmac.compare_digest(token.encode("utf-8"), pending.csrf_token.encode("utf-8"))
            and self.cookies.csrf_matches(request, state, token)
        ):
            log.warn(
                "Consent CSRF check failed for client {client_id}", client_id=pending.client_id
            )
            raise forged_request_page()
        if decision == "deny":
            return await self._deny(request, state)
        if decision == "approve":
            return await self._approve(request, pending)
        raise _bad_form_page("The approval form carried an unknown decision.")

    async def _deny(self, request: Request, state: str) -> bytes:
        pending = await self.logins.take_pending(state)
        if pending is None:  # lost a race with another submission
            raise expired_request_page()
        self.cookies.clear_csrf(request, state)
        log.info("Consent denied for client {client_id}", client_id=pending.client_id)
        location = error_redirect_uri(
            pending.redirect_uri,
            "access_denied",
            "the user denied the authorization request",
            pending.client_state,
            self.issuer,
        )
        return redirect(request, location)

    async def _approve(self, request: Request, pending: PendingAuthorization) -> bytes | None:
        consented = attrs.evolve(pending, consented=True)
        await self.logins.update_pending(consented)
        if self.mode == "remember":
            self.cookies.remember(request, pending)
        log.info("Consent given for client {client_id}", client_id=pending.client_id)
        return await self.continue_to_upstream(request, consented)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


APPROVAL_FORM = FormReader(MAX_CONSENT_BODY, PageRefusals("approval form", _bad_form_page))
