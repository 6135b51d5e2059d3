"""``/oauth/callback``: where the upstream IdP sends the browser back.

The internal state names the PendingAuthorization (taken, so it completes once), and only
the browser holding its login cookie (``login_binding``) may complete it. The provider
turns the callback into an identity and a token session; authproxy maps the identity to its
stable user id and redirects to the client with its own single-use authorization code.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver.authorize import error_redirect_uri
from authproxy.authserver.login_binding import LoginBinding
from authproxy.authserver.upstream_failure import upstream_error_page
from authproxy.http.errors import HTMLPageError
from authproxy.http.forms import query_pairs
from authproxy.http.resource import AsyncResource
from authproxy.http.responses import add_query, redirect
from authproxy.ops.metrics import EventCounters
from authproxy.storage import Storage
from authproxy.storage.models import AuthorizationCode, PendingAuthorization
from authproxy.tokens import AUTHORIZATION_CODE, Clock, OpaqueTokens
from authproxy.upstream.interface import IUpstreamProvider, UpstreamDenied, UpstreamError

# IdP errors passed on as they are; anything else is the user (or the IdP) saying no.
_PASSED_THROUGH_ERRORS = ("temporarily_unavailable", "server_error")


def another_browser_page() -> HTMLPageError:
    return HTMLPageError(
        403,
        "This sign-in was started in another browser",
        "The sign-in you are returning from was not started in this browser, so it was "
        "stopped here and nothing was shared with any application. If someone sent you a "
        "link to sign in, do not use it.",
        "Go back to your application and start signing in again from there.",
    )


def expired_state_page() -> HTMLPageError:
    return HTMLPageError(
        400,
        "This sign-in has expired",
        "The sign-in you are returning from is unknown, has expired, or was already completed.",
        "Go back to your application and sign in again.",
    )


class _LoginOutcome:
    """How a callback ended: ``ended`` when it redirects back to the client, ``refused``
    when it shows an error page (unknown or expired state unless said otherwise)."""

    ended = "success"
    refused = "expired"


class CallbackResource(AsyncResource):
    """``GET /oauth/callback``: finish the upstream login and issue an authorization code."""

    log = Logger()
    for_browsers = True

    def __init__(
        self,
        *,
        storage: Storage,
        provider: IUpstreamProvider,
        clock: Clock,
        opaque: OpaqueTokens,
        issuer: str,
        auth_code_lifespan: float,
        binding: LoginBinding,
        require_consent: bool = False,
        events: EventCounters | None = None,
    ) -> None:
        super().__init__()
        self.events = events or EventCounters()
        self.storage = storage
        self.provider = provider
        self.clock = clock
        self.opaque = opaque
        self.issuer = issuer
        self.auth_code_lifespan = auth_code_lifespan
        self.require_consent = require_consent
        self.binding = binding

    async def handle_GET(self, request: Request) -> bytes:
        """Count the login's outcome: its own, or the refusal that ended it."""
        outcome = _LoginOutcome()
        try:
            answer = await self._login(request, outcome)
        except HTMLPageError:
            self.events.logins.inc(outcome.refused)
            raise
        self.events.logins.inc(outcome.ended)
        return answer

    async def _login(self, request: Request, outcome: _LoginOutcome) -> bytes:
        pairs = query_pairs(request)
        args: dict[str, str] = {}
        for name, value in pairs:
            args.setdefault(name, value)
        states = [value for name, value in pairs if name == "state"]
        if len(states) != 1 or not states[0]:
            raise expired_state_page()
        state = states[0]
        if await self.storage.logins.get_pending(state) is None:
            raise expired_state_page()
        # Checked before the pending is taken: a browser holding someone else's link cannot
        # use up their login.
        if not self.binding.is_bound(request, state):
            outcome.refused = "another_browser"
            self.log.warn("Callback from a browser that did not start the login refused")
            raise another_browser_page()
        pending = await self.storage.logins.take_pending(state)
        if pending is None:  # lost a race with another request of the same browser
            raise expired_state_page()
        self.binding.clear(request, state)
        if self.require_consent and not pending.consented:
            # Only reachable by skipping the consent page: never issue a code for it.
            outcome.refused = "no_consent"
            self.log.warn(
                "Callback for client {client_id} without consent refused",
                client_id=pending.client_id,
            )
            raise HTMLPageError(
                400,
                "This sign-in was not approved",
                "The sign-in you are returning from was never approved on this server's "
                "consent page.",
                "Go back to your application and sign in again.",
            )

        if "error" in args:
            error = args["error"] if args["error"] in _PASSED_THROUGH_ERRORS else "access_denied"
            outcome.ended = "upstream_refused"
            self.log.info(
                "Upstream login for client {client_id} ended with {error}",
                client_id=pending.client_id,
                error=args["error"][:64],
            )
            return self._client_error(request, pending, error, "the identity provider refused")
        try:
            identity = await self.provider.finish_login(args, pending)
        except UpstreamDenied as e:
            self.log.info("Upstream login denied: {error}", error=str(e))
            outcome.ended = "denied"
            return self._client_error(
                request, pending, "access_denied", "the identity provider refused"
            )
        except UpstreamError as e:
            self.log.warn("Upstream login failed: {error}", error=str(e))
            outcome.refused = "upstream_error"
            raise upstream_error_page(e) from None

        user_id = await self.storage.users.user_id_for(self.provider.name, identity.subject)
        code, code_id = self.opaque.mint(AUTHORIZATION_CODE)
        now = self.clock.seconds()
        await self.storage.codes.put_code(
            AuthorizationCode(
                code_id=code_id,
                client_id=pending.client_id,
                redirect_uri=pending.redirect_uri,
                redirect_uri_given=pending.redirect_uri_given,
                code_challenge=pending.code_challenge,
                scopes=pending.scopes,
                resource=pending.resource,
                user_id=user_id,
                tsid=identity.tsid,
                created_at=now,
                expires_at=now + self.auth_code_lifespan,
                name=identity.name,
                email=identity.email,
                nonce=pending.nonce,
                email_verified=identity.email_verified,
                preferred_username=identity.preferred_username,
            )
        )
        self.log.info(
            "Issued an authorization code to client {client_id} for user {user_id}",
            client_id=pending.client_id,
            user_id=user_id,
        )
        location = add_query(
            pending.redirect_uri, {"code": code, "state": pending.client_state, "iss": self.issuer}
        )
        return redirect(request, location)

    def _client_error(
        self, request: Request, pending: PendingAuthorization, error: str, description: str
    ) -> bytes:
        return redirect(
            request,
            error_redirect_uri(
                pending.redirect_uri, error, description, pending.client_state, self.issuer
            ),
        )
