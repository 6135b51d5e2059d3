"""The authorization endpoint, ``/oauth/authorize`` (OAuth 2.1 code flow with PKCE S256).

Until the client and its redirect URI are known to be genuine, errors are shown to the person
in the browser (never redirected: an open redirector would forward users anywhere). After
that, errors go back to the client's redirect URI with ``error``, ``state`` and ``iss``
(RFC 9207). A valid request becomes a PendingAuthorization stored under a fresh internal
state, and the browser is handed to the upstream identity provider.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Protocol

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver.audience import InvalidTarget, ResourceIndicators
from authproxy.authserver.cimd.document import DocumentError, DocumentsBusy
from authproxy.authserver.clients import BUSY_RETRY_AFTER, ClientResolver
from authproxy.authserver.limits import MAX_CLIENT_STATE, MAX_NONCE, MAX_SCOPE_PARAMETER
from authproxy.authserver.login_binding import LoginBinding
from authproxy.authserver.ratelimit import TokenBucketLimiter, source_address
from authproxy.authserver.redirect_uri import redirect_uri_matches
from authproxy.authserver.scopes import ClientScopes, split_scope
from authproxy.authserver.upstream_failure import upstream_error_page
from authproxy.http.errors import HTMLPageError
from authproxy.http.forms import query_pairs
from authproxy.http.resource import AsyncResource
from authproxy.http.responses import TrustedProxies, add_query, redirect, source_key
from authproxy.storage import Storage
from authproxy.storage.models import PendingAuthorization, RegisteredClient
from authproxy.tokens import Clock, is_valid_s256_challenge
from authproxy.upstream.interface import IUpstreamProvider, UpstreamError

# How long a user may take at the upstream IdP (password, MFA, consent) before coming back.
DEFAULT_PENDING_LIFESPAN = 600.0


class ConsentGate(Protocol):
    """The consent step (``authproxy.authserver.consent.ConsentStep``) as authorize sees it."""

    async def begin(
        self, request: Request, pending: PendingAuthorization, client: RegisteredClient
    ) -> bytes | None:
        """None to go on to the IdP at once, else the consent page's body."""

    def would_ask(
        self, request: Request, pending: PendingAuthorization, client: RegisteredClient
    ) -> bool:
        """Whether :meth:`begin` would show the consent page for this request."""


class AuthorizationRedirectError(Exception):
    """An error sent back to the (validated) client redirect URI."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


def error_redirect_uri(
    redirect_uri: str, error: str, description: str, client_state: str | None, issuer: str
) -> str:
    """The client's redirect URI carrying an authorization error response (RFC 6749 §4.1.2.1)."""
    return add_query(
        redirect_uri,
        {"error": error, "error_description": description, "state": client_state, "iss": issuer},
    )


def bad_request_page(message: str, advice: str = "") -> HTMLPageError:
    return HTMLPageError(
        400,
        "This sign-in request cannot be used",
        message,
        advice or "Go back to your application and start the sign-in again.",
    )


class AuthorizeResource(AsyncResource):
    """``GET /oauth/authorize``: validate, store a PendingAuthorization, hand off upstream."""

    log = Logger()
    for_browsers = True

    def __init__(
        self,
        *,
        storage: Storage,
        provider: IUpstreamProvider,
        clock: Clock,
        issuer: str,
        allowed_audiences: Sequence[str],
        scopes_supported: ClientScopes | Sequence[str],
        binding: LoginBinding,
        pending_lifespan: float = DEFAULT_PENDING_LIFESPAN,
        consent: ConsentGate | None = None,
        limiter: TokenBucketLimiter | None = None,
        trusted_proxies: Sequence[str] = (),
        clients: ClientResolver | None = None,
    ) -> None:
        super().__init__()
        self.storage = storage
        self.clients = clients or ClientResolver(storage.clients)
        self.provider = provider
        self.clock = clock
        self.issuer = issuer
        self.resources = ResourceIndicators(allowed_audiences)
        self.limiter = limiter
        self._trusted = TrustedProxies.from_cidrs(trusted_proxies)
        self.client_scopes = ClientScopes.of(scopes_supported)
        self.pending_lifespan = pending_lifespan
        self.consent = consent
        self.binding = binding

    async def handle_GET(self, request: Request) -> bytes:
        await self._check_rate(request)
        pairs = query_pairs(request)
        client, redirect_uri, given = await self._client_and_redirect_uri(pairs)
        params: dict[str, str] = {}
        repeated: list[str] = []
        for name, value in pairs:
            if name in params:
                repeated.append(name)
            params[name] = value
        # The client's state goes back with every error; a repeated one is not trustworthy.
        client_state = None if "state" in repeated else params.get("state")
        try:
            if client_state is not None and len(client_state) > MAX_CLIENT_STATE:
                client_state = None  # too large to be stored or sent back
                raise AuthorizationRedirectError(
                    "invalid_request", f"state is longer than {MAX_CLIENT_STATE} characters"
                )
            pending = self._validate(client, redirect_uri, params, repeated, client_state)
            pending = attrs.evolve(pending, redirect_uri_given=given)
            self._check_prompt(request, params.get("prompt"), pending, client)
        except AuthorizationRedirectError as e:
            self.log.info(
                "Authorization request of client {client_id} refused: {error}",
                client_id=client.client_id,
                error=e.error,
            )
            return redirect(
                request,
                error_redirect_uri(redirect_uri, e.error, e.description, client_state, self.issuer),
            )
        await self.storage.clients.touch_client(client.client_id)
        # owned by its source: at the cap, a flood replaces its own logins in progress first
        pending = attrs.evolve(pending, owner=source_key(source_address(request, self._trusted)))
        await self.storage.logins.put_pending(pending)
        return await self._hand_off(request, pending, client)

    async def _check_rate(self, request: Request) -> None:
        """Each authorize stores a pending authorization and probes the IdP: bound it per
        source address, so one address cannot evict other users' logins in progress."""
        if self.limiter is None:
            return
        address = source_address(request, self._trusted)
        retry_after = await self.limiter.refuse(address, "Authorization")
        if retry_after is not None:
            request.setHeader("Retry-After", retry_after)
            raise HTMLPageError(
                429,
                "Too many sign-in attempts",
                "This address started more sign-ins than the server accepts in a short time.",
                "Wait a minute, then start again from your application.",
            )

    async def _client_and_redirect_uri(
        self, pairs: list[tuple[str, str]]
    ) -> tuple[RegisteredClient, str, bool]:
        """The registered client, the validated redirect URI and whether the request named
        it, or an HTML 400 page.

        A request may omit ``redirect_uri`` when the client registered exactly one (RFC 6749
        §3.1.2.3); with several, OAuth 2.1 requires it, since which is meant is unknown. The
        one it then means is checked like a named one, so a URI stored before a parser rule
        tightened is never followed.
        """
        client_ids = [value for name, value in pairs if name == "client_id"]
        redirect_uris = [value for name, value in pairs if name == "redirect_uri"]
        if len(client_ids) != 1 or not client_ids[0]:
            raise bad_request_page("The request does not name exactly one application (client_id).")
        try:
            client = await self.clients.resolve(client_ids[0])
        except DocumentError as e:
            raise bad_request_page(
                f"The application's metadata document ({client_ids[0]}) cannot be used: "
                f"{e.description}.",
                "Tell the application's developers; this server checked their metadata "
                "document and could not accept it.",
            ) from None
        except DocumentsBusy:
            raise HTMLPageError(
                503,
                "This server is busy",
                "This server is busy fetching other applications' metadata documents, so it "
                "could not check this application's just now.",
                "Wait a few seconds, then retry the sign-in from your application.",
                headers={"Retry-After": str(BUSY_RETRY_AFTER)},
            ) from None
        if client is None:
            raise bad_request_page(
                "The application that sent you here is not registered with this server, "
                "or its registration has expired.",
                "Go back to your application and connect it to this server again.",
            )
        omitted = not redirect_uris and len(client.redirect_uris) == 1
        if omitted:  # the stored URI must pass today's parser, as a named one must
            redirect_uris = [client.redirect_uris[0]]
        if len(redirect_uris) != 1 or not redirect_uris[0]:
            raise bad_request_page("The request does not name exactly one redirect URI.")
        redirect_uri = redirect_uris[0]
        if not any(redirect_uri_matches(uri, redirect_uri) for uri in client.redirect_uris):
            raise bad_request_page(
                "The address this request would return you to is not registered for the "
                "application, so you are not being sent there."
            )
        return client, redirect_uri, not omitted

    def _validate(
        self,
        client: RegisteredClient,
        redirect_uri: str,
        params: dict[str, str],
        repeated: list[str],
        client_state: str | None,
    ) -> PendingAuthorization:
        if "resource" in repeated:
            raise AuthorizationRedirectError("invalid_target", "at most one resource is allowed")
        if repeated:
            raise AuthorizationRedirectError(
                "invalid_request", f"parameter {sorted(set(repeated))[0]} is repeated"
            )
        for unsupported in ("request", "request_uri"):
            if unsupported in params:
                raise AuthorizationRedirectError(
                    f"{unsupported}_not_supported", f"{unsupported} is not supported"
                )
        response_type = params.get("response_type")
        if not response_type:
            raise AuthorizationRedirectError("invalid_request", "response_type is required")
        if response_type != "code":
            raise AuthorizationRedirectError(
                "unsupported_response_type", 'only response_type "code" is supported'
            )
        challenge = params.get("code_challenge")
        if not challenge:
            raise AuthorizationRedirectError(
                "invalid_request", "code_challenge is required (PKCE with S256)"
            )
        if params.get("code_challenge_method") != "S256":
            raise AuthorizationRedirectError(
                "invalid_request", 'code_challenge_method must be "S256"'
            )
        if not is_valid_s256_challenge(challenge):
            raise AuthorizationRedirectError(
                "invalid_request", "code_challenge is not a base64url SHA-256 digest"
            )
        scope = params.get("scope")
        if scope is not None and len(scope) > MAX_SCOPE_PARAMETER:
            raise AuthorizationRedirectError(
                "invalid_request", f"scope is longer than {MAX_SCOPE_PARAMETER} characters"
            )
        scopes = self._scopes(client, scope)
        resource = self._resource(params.get("resource"))
        nonce = params.get("nonce") or None
        if nonce is not None and len(nonce) > MAX_NONCE:
            raise AuthorizationRedirectError(
                "invalid_request", f"nonce is longer than {MAX_NONCE} characters"
            )
        now = self.clock.seconds()
        return PendingAuthorization(
            state=secrets.token_urlsafe(32),
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            client_state=client_state,
            code_challenge=challenge,
            code_challenge_method="S256",
            scopes=scopes,
            resource=resource,
            created_at=now,
            expires_at=now + self.pending_lifespan,
            nonce=nonce,
        )

    def _check_prompt(
        self,
        request: Request,
        prompt: str | None,
        pending: PendingAuthorization,
        client: RegisteredClient,
    ) -> None:
        """``prompt=none`` (OIDC Core §3.1.2.1, §3.1.2.6): the client asks for no page at all.

        authproxy cannot complete any authorization without pages: the browser always goes
        to the upstream IdP to sign in (authproxy keeps no browser session of its own). So
        the answer is ``consent_required`` when the consent page would be shown first, else
        ``login_required``. Other prompt values are left to the IdP's usual behaviour.
        """
        values = (prompt or "").split()
        if "none" not in values:
            return
        if len(values) > 1:
            raise AuthorizationRedirectError(
                "invalid_request", "prompt=none cannot be combined with other prompt values"
            )
        if self.consent is not None and self.consent.would_ask(request, pending, client):
            raise AuthorizationRedirectError(
                "consent_required", "the user must approve this application on a consent page"
            )
        raise AuthorizationRedirectError(
            "login_required", "the user must sign in at the identity provider"
        )

    def _scopes(self, client: RegisteredClient, requested: str | None) -> tuple[str, ...]:
        if requested is None or not requested.strip():
            return tuple(s for s in client.scopes if s in self.client_scopes.supported)
        allowed = self.client_scopes.authorizable(client.scopes)
        scopes = split_scope(requested)
        if outside := [s for s in scopes if s not in allowed]:
            raise AuthorizationRedirectError(
                "invalid_scope", f"scope not allowed for this client: {' '.join(outside)}"
            )
        return scopes

    def _resource(self, requested: str | None) -> str:
        try:
            return self.resources.at_authorization(requested)
        except InvalidTarget as e:
            raise AuthorizationRedirectError("invalid_target", str(e)) from None

    async def _hand_off(
        self, request: Request, pending: PendingAuthorization, client: RegisteredClient
    ) -> bytes:
        """Continue a valid, stored authorization request: consent first, then the IdP.

        Without a consent step (or when it needs no page) the request counts as consented.
        Otherwise the consent page is shown; its approval calls :meth:`redirect_to_upstream`.
        """
        if self.consent is not None:
            page = await self.consent.begin(request, pending, client)
            if page is not None:
                return page
        return await self.redirect_to_upstream(request, attrs.evolve(pending, consented=True))

    async def redirect_to_upstream(self, request: Request, pending: PendingAuthorization) -> bytes:
        """Start the upstream login for ``pending`` and send the browser to the IdP.

        Also the consent page's continuation (``ConsentResource(continue_to_upstream=...)``).
        Every way upstream passes here, so this is where the login is bound to the browser
        (``login_binding``): only this browser's return to ``/oauth/callback`` counts.
        """
        try:
            await self.provider.check_reachable()
            login = self.provider.start_login(pending.state)
        except UpstreamError as e:
            self.log.warn("Upstream login could not start: {error}", error=str(e))
            raise upstream_error_page(e) from None
        await self.storage.logins.update_pending(
            attrs.evolve(
                pending, upstream_code_verifier=login.code_verifier, upstream_nonce=login.nonce
            )
        )
        self.binding.bind(request, pending.state, pending.expires_at - self.clock.seconds())
        return redirect(request, login.url)
