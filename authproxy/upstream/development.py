"""The development upstream: a built-in login page where one types any user name.

For trying authproxy on one's own machine only: configuration validation
(``config.development_listen_problems``) refuses it on any non-loopback listen address.
The "upstream access token" handed to the backend is an opaque random string, so the
backend never sees authproxy's own JWT.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import attrs
from twisted.application.service import IService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request
from zope.interface import implementer

from authproxy.config import Config, ConfigError
from authproxy.http import pages
from authproxy.http.forms import FormReader, PageRefusals, query_pairs
from authproxy.http.loopback import listen_is_loopback
from authproxy.http.responses import add_query
from authproxy.storage.models import PendingAuthorization, UpstreamTokenSession
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.upstream.interface import (
    IUpstreamProvider,
    UpstreamDenied,
    UpstreamError,
    UpstreamIdentity,
    UpstreamLogin,
)
from authproxy.upstream.kind import UpstreamType
from authproxy.upstream.sessions import TokenResponse, TokenSessions

LOGIN_PATH = "/oauth/dev-login"
#: How long the code from the login page stays redeemable at the callback.
CODE_LIFETIME = 300.0
#: Codes kept at most (a flood of form posts drops the oldest).
MAX_CODES = 1000
#: Lifetime of the opaque development access token (refreshed locally after that).
ACCESS_TOKEN_LIFETIME = 3600.0
MAX_USERNAME = 64

log = Logger()


@attrs.frozen
class _DevCode:
    username: str
    state: str
    expires_at: float


#: A user name, or an email-like ``name@domain``: what an IdP's users are usually called.
_USERNAME = re.compile(r"[A-Za-z0-9._+-]+(@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?")
#: The same rule as the form's ``pattern`` attribute (the browser checks it before sending).
_USERNAME_PATTERN = r"[A-Za-z0-9._+\-]+(@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*)?"
#: What the page says next to the field, and again when a name is refused.
USERNAME_RULE = (
    f"A name (alice) or an email address (alice@example.com): up to {MAX_USERNAME} ASCII "
    "letters, digits and . _ - +, and one @ before the domain."
)


def valid_username(username: str) -> bool:
    """1 to 64 characters: a name (ASCII letters, digits, ``.``, ``_``, ``-``, ``+``), or such
    a name, ``@`` and a domain: an email address without quoting or IP literals."""
    return 0 < len(username) <= MAX_USERNAME and _USERNAME.fullmatch(username) is not None


def user_email(username: str) -> str:
    """The email claim: the name itself when it is an address, else ``name@localhost``."""
    return username if "@" in username else f"{username}@localhost"


@implementer(IUpstreamProvider)
class DevelopmentProvider(TokenSessions):
    """The built-in development IdP: the login page names the user, nothing is checked."""

    def __init__(self, config: Config, sessions: IUpstreamSessions, clock: IReactorTime) -> None:
        super().__init__(config, sessions, clock)
        self.login_url = config.server.public_url.rstrip("/") + LOGIN_PATH
        self._callback_url = config.upstream.redirect_uri
        self._codes: dict[str, _DevCode] = {}
        log.warn(
            "upstream.type is development: anyone who reaches {url} can log in as any user; "
            "never use it beyond your own machine",
            url=self.login_url,
        )

    def services(self) -> list[IService]:
        """No services: nothing to fetch."""
        return []

    def readiness(self) -> tuple[bool, str]:
        return True, "development upstream"

    def routes(self) -> Mapping[str, Any]:
        return {LOGIN_PATH: DevLoginPage(self)}

    def check_reachable(self) -> Deferred[None]:
        """The login page is served by this process: always reachable."""
        return succeed(None)

    def start_login(self, state: str) -> UpstreamLogin:
        """The development login page for the pending authorization ``state``."""
        return UpstreamLogin(
            url=add_query(self.login_url, {"state": state}), code_verifier="", nonce=""
        )

    def issue_code(self, username: str, state: str) -> str:
        """A single-use code naming ``username``; the callback URL carries it back."""
        now = self._now()
        for code in [c for c, entry in self._codes.items() if entry.expires_at <= now]:
            del self._codes[code]
        while len(self._codes) >= MAX_CODES:
            del self._codes[next(iter(self._codes))]
        code = secrets.token_urlsafe(32)
        self._codes[code] = _DevCode(username, state, now + CODE_LIFETIME)
        return code

    def callback_url(self, code: str, state: str) -> str:
        return add_query(self._callback_url, {"code": code, "state": state})

    async def _finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> UpstreamIdentity:
        """Redeem the login page's code: the user is whoever was typed in."""
        if "error" in args:
            raise UpstreamDenied("the login was cancelled")
        entry = self._codes.pop(args.get("code") or "", None)
        if entry is None or entry.expires_at <= self._now():
            raise UpstreamError("the development login code is unknown, used or expired")
        if entry.state != pending.state or args.get("state") != pending.state:
            raise UpstreamError("the login state does not match")
        username = entry.username
        tokens = TokenResponse(
            access_token=secrets.token_urlsafe(32),
            token_type="Bearer",
            expires_in=ACCESS_TOKEN_LIFETIME,
            refresh_token=secrets.token_urlsafe(32),
        )
        email = user_email(username)
        return await self._open_session(
            username,
            tokens,
            name=username,
            email=email,
            claims={
                "sub": username,
                "name": username,
                "preferred_username": username,
                "email": email,
            },
        )

    def _refresh(self, session: UpstreamTokenSession) -> Deferred[TokenResponse]:
        # a new opaque token, as a real IdP's refresh would give
        return succeed(
            TokenResponse(
                access_token=secrets.token_urlsafe(32),
                token_type="Bearer",
                expires_in=ACCESS_TOKEN_LIFETIME,
            )
        )


_FORM = """<p class="lead">authproxy runs with its built-in development identity provider:
type any user name. Never use this beyond your own machine.</p>
{error}<form method="post" action="{action}">
<input type="hidden" name="state" value="{state}">
<dl><div><dt><label for="username">User name</label></dt>
<dd><input id="username" name="username" value="{username}" required autofocus
 maxlength="{maxlength}" pattern="{pattern}" autocomplete="username"
 aria-describedby="username-rule">
<p id="username-rule" class="muted">{rule}</p></dd></div></dl>
<div class="actions"><button class="primary" type="submit">Log in</button></div>
</form>"""


#: The login form is two short fields; anything larger is not from the page.
MAX_FORM_BODY = 4096


class _LoginFormRefused(Exception):
    """The login form could not be read; the page is shown again saying why."""


LOGIN_FORM = FormReader(MAX_FORM_BODY, PageRefusals("login form", _LoginFormRefused))


def _query_state(request: Request) -> str:
    """The first ``state`` of the query (what ``start_login`` put in the URL)."""
    return next((value for name, value in query_pairs(request) if name == "state"), "").strip()


class DevLoginPage(Resource):
    """GET: the login form; POST: redirect to the callback with a code for the typed user name."""

    isLeaf = True

    def __init__(self, provider: DevelopmentProvider) -> None:
        super().__init__()
        self._provider = provider

    def _page(
        self, request: Request, status: int, state: str, username: str = "", error: str = ""
    ) -> bytes:
        request.setResponseCode(status)
        pages.set_page_headers(request, has_form=True)
        body = _FORM.format(
            action=escape(self._provider.login_url),
            state=escape(state),
            username=escape(username),
            maxlength=MAX_USERNAME,
            pattern=escape(_USERNAME_PATTERN),
            rule=escape(USERNAME_RULE),
            error=f'<p class="note" role="alert">{escape(error)}</p>\n' if error else "",
        )
        return pages.page_document("Development login", body, "authproxy").encode("utf-8")

    def _start_again(self, request: Request, error: str) -> bytes:
        """A 400 page with no login to continue: ``error`` sends the user back to the client."""
        return self._page(request, 400, "", error=error)

    def render_GET(self, request: Request) -> bytes:
        state = _query_state(request)
        if not state or len(state) > 512:
            return self._start_again(
                request,
                "This page needs the state of a login in progress: start again from your MCP client.",
            )
        return self._page(request, 200, state)

    def render_POST(self, request: Request) -> bytes:
        try:
            form = LOGIN_FORM.read(request)
        except _LoginFormRefused as refused:
            return self._start_again(request, f"{refused} Start again from your MCP client.")
        state = form.get("state", "").strip()
        username = form.get("username", "").strip()
        if not state or len(state) > 512:
            return self._start_again(
                request, "The login state is missing: start again from your MCP client."
            )
        if not valid_username(username):
            return self._page(
                request,
                400,
                state,
                username[:MAX_USERNAME],
                error=f"That user name is not accepted. {USERNAME_RULE}",
            )
        code = self._provider.issue_code(username, state)
        log.info("Development login as {username}", username=username)
        request.setResponseCode(303)
        request.setHeader("Location", self._provider.callback_url(code, state))
        request.setHeader("Cache-Control", "no-store")
        request.setHeader("Referrer-Policy", "no-referrer")
        return b""


def development_listen_problems(listen: Sequence[str]) -> list[str]:
    """Why the development upstream may not run on these listen endpoints; [] when it may.

    It lets anyone log in as anyone, so it only serves loopback (and UNIX) addresses.
    """
    return [
        f'server.listen[{i}]: "{description}" is not a loopback address; upstream.type '
        '"development" lets anyone log in as anyone, so it only listens on 127.0.0.1, [::1] '
        "or localhost"
        for i, description in enumerate(listen)
        if not listen_is_loopback(description)
    ]


def _config_problems(config: Config) -> list[str]:
    return development_listen_problems(config.server.listen)


def _build(
    config: Config, sessions: IUpstreamSessions, reactor: Any, http: Any, reachability: Any
) -> IUpstreamProvider:
    # The login page is authproxy's own: no IdP to reach, so no HTTP client and no probe.
    # Validation refuses a public listen already; a Config built in code is checked here too.
    problems = development_listen_problems(config.server.listen)
    if problems:
        raise ConfigError(problems)
    return DevelopmentProvider(config, sessions, reactor)


#: ``[upstream] type = "development"``: the built-in login page; loopback only, no IdP fields.
DEVELOPMENT = UpstreamType("development", fields=(), config_problems=_config_problems, build=_build)
