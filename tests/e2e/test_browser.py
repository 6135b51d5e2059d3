"""A real browser (headless Chromium) through the whole login, consent page included.

authproxy runs as ``twistd -n authproxy`` in front of the real OpenID provider (npm
``oidc-provider``, tests/oidc). Chromium, driven through chromedriver's W3C WebDriver HTTP API
(plain urllib, no selenium), opens a registered client's authorize URL, approves on
authproxy's consent page, signs in and consents at the IdP, and lands on the client's loopback
redirect URI with a code and the client's state. Screenshots of the consent page and of an
error page go to tests/artifacts/.

Skips when chromium/chromedriver or the node fixture are missing (outside CI).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests import processes as procs

ARTIFACTS = procs.REPO_ROOT / "tests" / "artifacts"
UPSTREAM_SECRET = "browser-test-upstream-secret"
USERNAME = "alice"
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1000,1000",
)


def find_chromium() -> tuple[str, str]:
    """(chromium binary, chromedriver binary), or skip (fail in CI) when either is missing."""
    browser = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
    )
    if browser is None or driver is None:
        message = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser, driver


class WebDriverError(Exception):
    """A WebDriver command failed; ``error`` is the W3C error code (e.g. "no such element")."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(f"{error}: {message}")
        self.error = error


def _call(method: str, url: str, payload: Any = None, timeout: float = 60.0) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())["value"]
    except urllib.error.HTTPError as e:
        try:
            value = json.loads(e.read())["value"]
        except (ValueError, KeyError):
            raise WebDriverError("http error", str(e)) from None
        raise WebDriverError(value.get("error", "?"), value.get("message", "")) from None


class Browser:
    """One Chromium session through chromedriver's W3C WebDriver HTTP API."""

    def __init__(self, driver_url: str, binary: str, profile_dir: str, *, mobile: bool = False):
        args = [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]
        options: dict[str, Any] = {"binary": binary, "args": args}
        if mobile:
            options["mobileEmulation"] = {"deviceName": "Pixel 7"}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        session = _call("POST", f"{driver_url}/session", {"capabilities": capabilities})
        self.base = f"{driver_url}/session/{session['sessionId']}"
        self.command("POST", "/timeouts", {"implicit": 0, "pageLoad": 30000, "script": 10000})

    def command(self, method: str, path: str, payload: Any = None) -> Any:
        if payload is None and method == "POST":
            payload = {}
        return _call(method, self.base + path, payload)

    def get(self, url: str) -> None:
        """Navigate; a page that fails to load (nothing listening) is not an error here."""
        try:
            self.command("POST", "/url", {"url": url})
        except WebDriverError as e:
            if e.error not in ("unknown error", "timeout"):
                raise

    @property
    def url(self) -> str:
        return str(self.command("GET", "/url"))

    @property
    def title(self) -> str:
        return str(self.command("GET", "/title"))

    def source(self) -> str:
        return str(self.command("GET", "/source"))

    def find(self, css: str, timeout: float = 15.0) -> str:
        """The element id of the first match of ``css``, waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = self.command("POST", "/element", {"using": "css selector", "value": css})
                return str(found[_ELEMENT])
            except WebDriverError as e:
                if e.error != "no such element" or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{css!r} not found at {self.url}:\n{self.source()[:3000]}"
                    ) from None
            time.sleep(0.1)

    def click(self, css: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/click")

    def type(self, css: str, text: str) -> None:
        self.command("POST", f"/element/{self.find(css)}/value", {"text": text})

    def wait_for_url(self, prefix: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            url = self.url
            if url.startswith(prefix):
                return url
            if time.monotonic() > deadline:
                raise AssertionError(f"never reached {prefix}; at {url}:\n{self.source()[:3000]}")
            time.sleep(0.1)

    def screenshot(self, path: Path, width: int = 1000) -> Path:
        """A PNG of the page, the window resized to fit its content (the main element)."""
        size = self.command(
            "POST",
            "/execute/sync",
            {
                "script": (
                    "const main = document.querySelector('main');"
                    "const bottom = main ? main.getBoundingClientRect().bottom + 32"
                    " : document.documentElement.scrollHeight;"
                    "return [Math.ceil(bottom), window.outerHeight - window.innerHeight];"
                ),
                "args": [],
            },
        )
        content, chrome = int(size[0]), int(size[1])
        self.command("POST", "/window/rect", {"width": width, "height": max(360, content) + chrome})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.command("GET", "/screenshot")))
        return path

    def quit(self) -> None:
        try:
            self.command("DELETE", "")
        except (WebDriverError, OSError):
            pass


class RedirectListener:
    """The OAuth client's loopback redirect URI: records the query of every request to it."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[dict[str, str]]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                target = urlsplit(self.path)
                if target.path == "/callback":  # not the browser's /favicon.ico
                    received.append({k: v[0] for k, v in parse_qs(target.query).items()})
                body = b"<!DOCTYPE html><title>Signed in</title><p>You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.redirect_uri = f"http://127.0.0.1:{self.port}/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _http(method: str, url: str, body: Any = None, form: dict[str, str] | None = None) -> Any:
    headers = {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    elif form is not None:
        data = urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def write_config(directory: Path, port: int, issuer_url: str) -> Path:
    public = f"http://127.0.0.1:{port}"
    config = f"""
[server]
listen = ["tcp:{port}:interface=127.0.0.1"]
public_url = "{public}"

[backend]
url = "http://127.0.0.1:{procs.free_port()}"

[auth_server]
consent = "remember"

[upstream]
name = "test-idp"
type = "oidc"
issuer_url = "{issuer_url}"
client_id = "authproxy"
client_secret_env = "AUTHPROXY_UPSTREAM_CLIENT_SECRET"
scopes = ["openid", "email", "profile"]
"""
    path = directory / "authproxy.toml"
    path.write_text(config)
    return path


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(chromedriver URL, chromium binary) with chromedriver running."""
    binary, driver = find_chromium()
    port = procs.free_port()
    log_dir = tmp_path_factory.mktemp("chromedriver")
    process = procs.start_process(
        [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
        ready_url=f"http://127.0.0.1:{port}/status",
        name="chromedriver",
        log_dir=log_dir,
    )
    yield f"http://127.0.0.1:{port}", binary
    process.stop()


@pytest.fixture()
def browser(chrome: tuple[str, str]) -> Iterator[Browser]:
    driver_url, binary = chrome
    profile = tempfile.mkdtemp(prefix="authproxy-chromium-")
    session = Browser(driver_url, binary, profile)
    yield session
    session.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def authproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """authproxy under twistd in front of the real OpenID provider; its public URL."""
    procs.ensure_oidc_fixture()
    find_chromium()  # skip before starting anything when the browser is missing
    work = tmp_path_factory.mktemp("authproxy")
    port = procs.free_port()
    public = f"http://127.0.0.1:{port}"
    idp = procs.start_oidc_provider(
        [procs.OIDCClient("authproxy", UPSTREAM_SECRET, (public + "/oauth/callback",))],
        log_dir=work,
    )
    config = write_config(work, port, idp.issuer)
    twistd = Path(sys.executable).with_name("twistd")
    process = procs.start_process(
        [str(twistd), "-n", "--pidfile=", "authproxy", "--config", str(config)],
        cwd=work,
        env={
            "AUTHPROXY_UPSTREAM_CLIENT_SECRET": UPSTREAM_SECRET,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(procs.REPO_ROOT), os.environ.get("PYTHONPATH")])
            ),
        },
        ready_url=public + "/health",
        name="authproxy",
        log_dir=work,
        timeout=30,
    )
    # Give the IdP discovery a moment; /ready says when it is done.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _http("GET", public + "/ready")[0] != 200:
        time.sleep(0.1)
    yield public
    process.stop()
    idp.stop()


def register(public: str, redirect_uri: str) -> str:
    status, body = _http(
        "POST",
        public + "/oauth/register",
        {
            "redirect_uris": [redirect_uri],
            "client_name": "Browser Test Client",
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "openid profile email offline_access",
        },
    )
    assert status == 201, body
    return str(json.loads(body)["client_id"])


def authorize_url(public: str, client_id: str, redirect_uri: str) -> tuple[str, str, str]:
    """(URL, state, code_verifier) of a PKCE S256 authorization request."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    state = secrets.token_urlsafe(16)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "code_challenge": challenge.rstrip(b"=").decode(),
            "code_challenge_method": "S256",
            "state": state,
            "scope": "openid profile email offline_access",
            "resource": public + "/mcp",
        }
    )
    return f"{public}/oauth/authorize?{query}", state, verifier


def test_login_through_consent_page(authproxy: str, browser: Browser) -> None:
    public = authproxy
    listener = RedirectListener()
    try:
        client_id = register(public, listener.redirect_uri)
        url, state, verifier = authorize_url(public, client_id, listener.redirect_uri)

        # authproxy's consent page.
        browser.get(url)
        browser.find("button[name=decision][value=approve]")
        source = browser.source()
        assert "calls itself" in source and "Browser Test Client" in source
        assert f"127.0.0.1:{listener.port}" in source
        browser.screenshot(ARTIFACTS / "consent.png")
        browser.click("button[name=decision][value=approve]")

        # The IdP's login form, then its consent.
        browser.type("input[name=login]", USERNAME)
        browser.type("input[name=password]", procs.OIDC_PASSWORD)
        browser.click("button[type=submit][value=login]")
        browser.click("button[value=confirm]")

        # Back at the client with a code and the client's state.
        final = browser.wait_for_url(listener.redirect_uri)
        params = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        assert params.get("state") == state, params
        assert params.get("iss") == public
        assert params.get("code"), params
        assert listener.received and listener.received[-1]["code"] == params["code"]

        # The code is good at the token endpoint.
        status, body = _http(
            "POST",
            public + "/oauth/token",
            form={
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": listener.redirect_uri,
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        assert status == 200, body
        assert json.loads(body)["access_token"]

        # Remembered consent (and the IdP session): a second authorization needs no click.
        url, state, _ = authorize_url(public, client_id, listener.redirect_uri)
        browser.get(url)
        final = browser.wait_for_url(listener.redirect_uri)
        params = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        assert params.get("state") == state and params.get("code"), params
    finally:
        listener.close()


def test_deny_returns_access_denied(authproxy: str, browser: Browser) -> None:
    listener = RedirectListener()
    try:
        client_id = register(authproxy, listener.redirect_uri)
        url, state, _ = authorize_url(authproxy, client_id, listener.redirect_uri)
        browser.get(url)
        browser.click("button[name=decision][value=deny]")
        final = browser.wait_for_url(listener.redirect_uri)
        params = {k: v[0] for k, v in parse_qs(urlsplit(final).query).items()}
        assert params.get("error") == "access_denied"
        assert params.get("state") == state
        assert params.get("iss") == authproxy
    finally:
        listener.close()


def test_error_page(authproxy: str, browser: Browser) -> None:
    url = f"{authproxy}/oauth/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "no-such-client",
            "redirect_uri": "http://127.0.0.1:9/callback",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "state": "s",
        }
    )
    status, body = _http("GET", url)
    assert status == 400
    assert b"<!DOCTYPE html>" in body and b"Traceback" not in body
    browser.get(url)
    browser.find("main h1")
    assert "What you can do" in browser.source()
    assert urlsplit(browser.url).netloc == urlsplit(authproxy).netloc  # never redirected
    browser.screenshot(ARTIFACTS / "error.png")
