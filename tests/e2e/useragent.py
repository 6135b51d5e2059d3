"""A small user agent standing in for a browser in the end-to-end tests.

It follows redirects one by one (so it can stop at the OAuth client's redirect URI instead of
fetching it), keeps cookies, sends ``Origin`` with form posts as browsers do, and fills in the
HTML forms it meets on the way:

- a login form (any form with a password field): the user name goes into the field named
  ``login``, ``username``, ``user`` or ``email``, the password into the password field;
- a consent form (authproxy's consent page, the OpenID provider's consent page): the form whose
  submit button says approve/allow/confirm/continue/yes/accept (or, with ``decision="deny"``,
  deny/cancel/abort/reject/no) is submitted with its hidden inputs and that button's name/value.

It uses ``httpx2``, the HTTP client the ``mcp`` SDK is built on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser
from typing import Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import attrs
import httpx2
from mcp.client.auth import OAuthFlowError
from mcp.shared.auth import AuthorizationCodeResult

Decision = Literal["approve", "deny"]

_REDIRECTS = {301, 302, 303, 307, 308}
_USER_FIELDS = ("login", "username", "user", "email")
_WORDS: dict[str, tuple[str, ...]] = {
    "approve": ("approve", "allow", "confirm", "continue", "yes", "accept", "authorize", "grant"),
    "deny": ("deny", "cancel", "abort", "reject", "decline", "no"),
}


class UserAgentError(Exception):
    """The flow met a page or status the user agent cannot get past."""

    def __init__(self, message: str, *, url: str, status: int, body: str):
        super().__init__(f"{message} (HTTP {status} at {url})")
        self.url = url
        self.status = status
        self.body = body


@attrs.define
class Button:
    """A submit button: its name/value (sent when clicked) and visible text."""

    name: str | None
    value: str
    text: str = ""

    def says(self, words: Iterable[str]) -> bool:
        """Whether its name, value or text contains one of ``words``."""
        label = set(re.findall(r"[a-z]+", f"{self.name or ''} {self.value} {self.text}".lower()))
        return any(word in label for word in words)


@attrs.define
class Form:
    """An HTML form: action, method, fields (name, type, value) and submit buttons."""

    action: str
    method: str
    fields: list[tuple[str, str, str]] = attrs.Factory(list)
    buttons: list[Button] = attrs.Factory(list)

    def field_names(self) -> set[str]:
        """The names of its fields."""
        return {name for name, _, _ in self.fields}

    def has_password(self) -> bool:
        """Whether it is a login form."""
        return any(kind == "password" for _, kind, _ in self.fields)

    def values(self, button: Button | None = None, **overrides: str) -> list[tuple[str, str]]:
        """The form data as a browser would send it, with ``overrides`` by field name."""
        data = [(name, overrides.get(name, value)) for name, _, value in self.fields]
        if button is not None and button.name:
            data.append((button.name, button.value))
        return data


class FormParser(HTMLParser):
    """Collects the forms of an HTML page (inputs, buttons; textarea and select are ignored)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._button: Button | None = None

    def handle_starttag(self, tag: str, attrs_list: list[tuple[str, str | None]]) -> None:
        attributes = {k: v if v is not None else "" for k, v in attrs_list}
        if tag == "form":
            self._form = Form(
                action=attributes.get("action", ""),
                method=attributes.get("method", "get").upper(),
            )
            self.forms.append(self._form)
        elif self._form is None:
            return
        elif tag == "input":
            kind = attributes.get("type", "text").lower()
            name = attributes.get("name")
            if kind in ("submit", "image"):
                self._form.buttons.append(Button(name, attributes.get("value", "")))
            elif name is None or kind in ("button", "reset", "file"):
                return
            elif kind in ("checkbox", "radio"):
                if "checked" in attributes:
                    self._form.fields.append((name, kind, attributes.get("value", "on")))
            else:
                self._form.fields.append((name, kind, attributes.get("value", "")))
        elif tag == "button" and attributes.get("type", "submit").lower() == "submit":
            self._button = Button(attributes.get("name"), attributes.get("value", ""))
            self._form.buttons.append(self._button)

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._button.text += data.strip()

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = None
        elif tag == "form":
            self._form = None
            self._button = None


def parse_forms(html: str) -> list[Form]:
    """The forms of an HTML page."""
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser.forms


@attrs.frozen
class Visit:
    """One request the user agent made and the status it got."""

    method: str
    url: str
    status: int


class UserAgent:
    """A cookie-keeping, redirect-following, form-filling stand-in for a browser.

    One ``UserAgent`` is one browser profile: cookies (IdP session, authproxy's remembered
    consent) persist across ``login`` calls. ``visits`` records every request; ``pages`` every
    HTML page shown (URL, status, text), so tests can assert that a consent page appeared.
    """

    def __init__(
        self,
        *,
        client: httpx2.AsyncClient | None = None,
        max_steps: int = 20,
        timeout: float = 10.0,
    ):
        self._client = client or httpx2.AsyncClient(timeout=timeout, follow_redirects=False)
        self._max_steps = max_steps
        self.visits: list[Visit] = []
        self.pages: list[tuple[str, int, str]] = []

    @property
    def cookies(self) -> httpx2.Cookies:
        """The cookie jar."""
        return self._client.cookies

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def __aenter__(self) -> UserAgent:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def login(
        self,
        authorize_url: str,
        username: str,
        password: str,
        *,
        redirect_uri: str | None = None,
        decision: Decision = "approve",
    ) -> str:
        """Open ``authorize_url``, log in and consent; return the URL sent to the client.

        Following stops at the first redirect whose Location starts with ``redirect_uri``
        (default: the ``redirect_uri`` parameter of ``authorize_url``); that URL, with
        ``code``/``state``/``iss`` or ``error``, is returned without being fetched. Every consent
        form is answered with ``decision``. Raises ``UserAgentError`` on an error status or a page
        without a form to submit (``.status``, ``.url``, ``.body`` describe it).
        """
        stop_at = redirect_uri or _query_param(authorize_url, "redirect_uri")
        if not stop_at:
            raise ValueError("authorize_url has no redirect_uri; pass redirect_uri=")
        request = self._client.build_request("GET", authorize_url)
        submitted_login = False
        for _ in range(self._max_steps):
            response = await self._client.send(request)
            await response.aread()
            url = str(response.url)
            self.visits.append(Visit(request.method, url, response.status_code))
            if response.status_code in _REDIRECTS:
                location = urljoin(url, response.headers["location"])
                if location.startswith(stop_at):
                    return location
                if response.status_code in (307, 308):
                    request = self._client.build_request(
                        request.method,
                        location,
                        content=request.content,
                        headers=_form_headers(request),
                    )
                else:
                    request = self._client.build_request("GET", location)
                continue
            body = response.text
            if response.status_code != 200:
                raise UserAgentError("error page", url=url, status=response.status_code, body=body)
            self.pages.append((url, response.status_code, body))
            form, button, data = self._choose(url, body, username, password, decision)
            if form.has_password():
                if submitted_login:
                    raise UserAgentError("login form shown again", url=url, status=200, body=body)
                submitted_login = True
            request = self._submit(url, form, data)
        raise UserAgentError("too many steps", url=str(request.url), status=0, body="")

    def _choose(
        self, url: str, body: str, username: str, password: str, decision: Decision
    ) -> tuple[Form, Button | None, list[tuple[str, str]]]:
        forms = parse_forms(body)
        for form in forms:
            user_field = next((n for n in _USER_FIELDS if n in form.field_names()), None)
            # A user-name-only form is a login too (authproxy's development login page).
            if form.has_password() or user_field is not None:
                overrides = {n: password for n, kind, _ in form.fields if kind == "password"}
                if user_field is None:
                    raise UserAgentError(
                        "login form without user field", url=url, status=200, body=body
                    )
                overrides[user_field] = username
                button = form.buttons[0] if form.buttons else None
                return form, button, form.values(button, **overrides)
        words = _WORDS[decision]
        for form in forms:
            for button in form.buttons:
                if button.says(words):
                    return form, button, form.values(button)
        # A form whose action names the decision (e.g. .../confirm, .../abort) with an unnamed button.
        for form in forms:
            if any(word in form.action.lower() for word in words):
                button = form.buttons[0] if form.buttons else None
                return form, button, form.values(button)
        raise UserAgentError(f"no form to {decision} on the page", url=url, status=200, body=body)

    def _submit(self, url: str, form: Form, data: list[tuple[str, str]]) -> httpx2.Request:
        target = urljoin(url, form.action or url)
        if form.method == "POST":
            parts = urlsplit(url)
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": f"{parts.scheme}://{parts.netloc}",
                "Referer": url,
            }
            return self._client.build_request(
                "POST", target, data=dict(_merge(data)), headers=headers
            )
        return self._client.build_request("GET", target, params=tuple(data))


def _merge(data: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    merged: dict[str, str | list[str]] = {}
    for name, value in data:
        if name in merged:
            previous = merged[name]
            merged[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            merged[name] = value
    return merged


def _form_headers(request: httpx2.Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "origin")}


def _query_param(url: str, name: str) -> str | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return values[0] if values else None


def callback_params(url: str) -> dict[str, str]:
    """The query parameters of a redirect to the client (``code``, ``state``, ``iss``, ``error``)."""
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


class BrowserLogin:
    """The ``redirect_handler``/``callback_handler`` pair of the SDK's ``OAuthClientProvider``.

    ``redirect_handler(url)`` runs the whole interactive login in ``agent``; then
    ``callback_handler()`` returns the code, state and iss from the URL the flow ended at (or
    raises ``OAuthFlowError`` when it carries an ``error``). ``authorize_urls`` and
    ``callback_urls`` record every round, so tests can count logins.
    """

    def __init__(
        self, agent: UserAgent, username: str, password: str, *, decision: Decision = "approve"
    ):
        self.agent = agent
        self.username = username
        self.password = password
        self.decision = decision
        self.authorize_urls: list[str] = []
        self.callback_urls: list[str] = []

    async def redirect_handler(self, authorization_url: str) -> None:
        """Open the authorization URL and log in (the SDK calls this instead of a browser)."""
        self.authorize_urls.append(authorization_url)
        self.callback_urls.append(
            await self.agent.login(
                authorization_url, self.username, self.password, decision=self.decision
            )
        )

    async def callback_handler(self) -> AuthorizationCodeResult:
        """The authorization response the login ended with."""
        params = callback_params(self.callback_urls[-1])
        if "error" in params or "code" not in params:
            raise OAuthFlowError(
                f"authorization failed: {params.get('error', 'no code')}"
                f" {params.get('error_description', '')}".strip()
            )
        return AuthorizationCodeResult(
            code=params["code"], state=params.get("state"), iss=params.get("iss")
        )
