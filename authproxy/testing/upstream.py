"""Test doubles for the upstream IdP seam, and an in-memory authorization server harness.

``FakeUpstreamProvider`` implements IUpstreamProvider with a tiny fake IdP page mounted among
authproxy's own routes: ``start_login`` points the browser at it, and it sends the browser
straight back to ``/oauth/callback`` (or with ``error=access_denied`` when told to deny).
``AuthServerHarness`` mounts the whole authorization server on a PrefixTable and drives it
with ``treq.testing.StubTreq`` and a ``Clock``: no sockets, no real time.

Re-exported by ``authproxy.testing``.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from zope.interface import implementer

from authproxy.storage.models import PendingAuthorization
from authproxy.upstream.interface import (
    IUpstreamProvider,
    UpstreamError,
    UpstreamIdentity,
    UpstreamLogin,
    UpstreamSessionEnded,
    UpstreamUnavailable,
)

FAKE_IDP_PATH = "/_fake_idp/authorize"


@attrs.frozen
class _IssuedCode:
    state: str
    subject: str
    name: str | None
    email: str | None
    email_verified: bool | None
    preferred_username: str | None


class FakeIdPLoginResource(Resource):
    """The fake IdP's authorization page: redirects straight back to the callback."""

    isLeaf = True

    def __init__(self, provider: FakeUpstreamProvider) -> None:
        super().__init__()
        self._provider = provider

    def render_GET(self, request: Request) -> bytes:
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        state = args.get("state", "")
        provider = self._provider
        provider.idp_requests.append(args)
        if provider.deny:
            params = {"error": "access_denied", "error_description": "no", "state": state}
        else:
            code = secrets.token_urlsafe(16)
            provider._codes[code] = _IssuedCode(
                state=state,
                subject=provider.subject,
                name=provider.name_claim,
                email=provider.email,
                email_verified=provider.email_verified,
                preferred_username=provider.preferred_username,
            )
            params = {"code": code, "state": state}
        request.setResponseCode(302)
        request.setHeader("Location", provider.callback_url + "?" + urlencode(params))
        return b""


@implementer(IUpstreamProvider)
class FakeUpstreamProvider:
    """An IUpstreamProvider for tests; set the public attributes to change its behaviour.

    - ``subject``, ``name_claim``, ``email``, ``email_verified``, ``preferred_username``: who
      logs in next.
    - ``deny``: the fake IdP answers ``error=access_denied``.
    - ``start_failure``: an UpstreamError ``start_login`` raises (IdP metadata unknown).
    - ``finish_failure``: an UpstreamError ``finish_login`` fails with.
    - ``sessions`` (tsid -> subject), ``ended_sessions``: the token sessions and the ended ones.
    """

    name = "fake"

    def __init__(self, public_url: str = "http://127.0.0.1:8080") -> None:
        self.base_url = public_url.rstrip("/")
        self.callback_url = self.base_url + "/oauth/callback"
        self.subject = "alice"
        self.name_claim: str | None = "Alice Example"
        self.email: str | None = "alice@example.com"
        self.email_verified: bool | None = True
        self.preferred_username: str | None = "alice"
        self.deny = False
        self.unreachable = False
        self.start_failure: UpstreamError | None = None
        self.finish_failure: UpstreamError | None = None
        self.sessions: dict[str, str] = {}
        self.ended_sessions: list[str] = []
        self.idp_requests: list[dict[str, str]] = []
        self._started: dict[str, tuple[str, str]] = {}  # state -> (verifier, nonce)
        self._codes: dict[str, _IssuedCode] = {}

    def check_reachable(self) -> Deferred[None]:
        if self.unreachable:
            return defer.fail(UpstreamUnavailable("the fake IdP is down", retry_after=7))
        return defer.succeed(None)

    def start_login(self, state: str) -> UpstreamLogin:
        if self.start_failure is not None:
            raise self.start_failure
        verifier, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(16)
        self._started[state] = (verifier, nonce)
        url = self.base_url + FAKE_IDP_PATH + "?" + urlencode({"state": state, "nonce": nonce})
        return UpstreamLogin(url=url, code_verifier=verifier, nonce=nonce)

    def finish_login(
        self, args: Mapping[str, str], pending: PendingAuthorization
    ) -> Deferred[UpstreamIdentity]:
        if self.finish_failure is not None:
            return defer.fail(self.finish_failure)
        issued = self._codes.pop(args.get("code", ""), None)
        if issued is None or issued.state != pending.state:
            return defer.fail(UpstreamError("the identity provider's code is unknown"))
        if self._started.pop(pending.state, None) != (
            pending.upstream_code_verifier,
            pending.upstream_nonce,
        ):
            return defer.fail(UpstreamError("the pending authorization lost its upstream secrets"))
        tsid = secrets.token_urlsafe(16)
        self.sessions[tsid] = issued.subject
        return defer.succeed(
            UpstreamIdentity(
                subject=issued.subject,
                tsid=tsid,
                name=issued.name,
                email=issued.email,
                email_verified=issued.email_verified,
                preferred_username=issued.preferred_username,
            )
        )

    def upstream_access_token(self, tsid: str) -> Deferred[str]:
        if tsid not in self.sessions:
            return defer.fail(UpstreamSessionEnded("the upstream session has ended"))
        return defer.succeed(f"upstream-access-token-{tsid}")

    def refresh_upstream_token(self, tsid: str, rejected: str) -> Deferred[str]:
        return self.upstream_access_token(tsid)

    def end_session(self, tsid: str) -> Deferred[None]:
        self.sessions.pop(tsid, None)
        self.ended_sessions.append(tsid)
        return defer.succeed(None)

    def readiness(self) -> tuple[bool, str]:
        return True, "fake upstream"

    def routes(self) -> Mapping[str, IResource]:
        return {FAKE_IDP_PATH: FakeIdPLoginResource(self)}


# -- harness -------------------------------------------------------------------------------

BASE_CONFIG: dict[str, Any] = {
    "server": {"public_url": "http://127.0.0.1:8080"},
    "backend": {"url": "http://127.0.0.1:9000"},
    "upstream": {"type": "development"},
    # The consent page has its own tests; flows here go straight to the IdP.
    "auth_server": {"consent": "skip"},
}
START_TIME = 1_700_000_000.0


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@attrs.frozen
class HTTPResult:
    """A finished in-memory response."""

    code: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    def location_params(self) -> dict[str, str]:
        """The query parameters of the Location header (single values)."""
        location = self.header("location") or ""
        return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def s256_pair() -> tuple[str, str]:
    """A fresh PKCE (verifier, S256 challenge)."""
    from authproxy.tokens import s256_challenge

    verifier = secrets.token_urlsafe(48)
    return verifier, s256_challenge(verifier)


class AuthServerHarness:
    """The authorization server (with JWKS and the fake upstream) in memory, driven synchronously.

    ``config`` entries are merged into a minimal loopback configuration. Every request method
    returns an :class:`HTTPResult`; flows that must succeed raise AssertionError otherwise.
    ``documents`` (``authserver.cimd.cache.ClientDocuments``) answers client_id URLs.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        clock: Clock | None = None,
        storage_limits: Mapping[str, Any] | None = None,
        documents: Any = None,
    ) -> None:
        from treq.testing import StubTreq

        from authproxy.authserver.jwks import JWKSResource
        from authproxy.authserver.login_binding import LoginBinding
        from authproxy.authserver.routes import auth_routes
        from authproxy.config import config_from_mapping
        from authproxy.http.routing import PrefixTable
        from authproxy.keys.ring import KeyRing, KeySources
        from authproxy.ops.metrics import EventCounters
        from authproxy.storage.memory import memory_storage
        from authproxy.tokens import OpaqueTokens

        if clock is None:
            clock = Clock()
            clock.advance(START_TIME)
        self.clock = clock
        self.config = config_from_mapping(_merge(BASE_CONFIG, config or {}))
        self.ring = KeyRing.load(KeySources())
        registration = self.config.auth_server.registration
        limits = {
            "max_clients": registration.max_clients,
            "unused_client_ttl": registration.unused_client_ttl,
            **(storage_limits or {}),
        }
        self.storage = memory_storage(clock, **limits)
        self.provider = FakeUpstreamProvider(self.config.server.public_url)
        self.root = PrefixTable()
        self.events = EventCounters()  # what /metrics would count
        routes = auth_routes(
            self.config, self.ring, self.storage, self.provider, clock, documents, self.events
        )
        self.root.mount_all(routes)
        self.root.mount("/.well-known/jwks.json", JWKSResource(self.ring))
        self.base = self.config.server.public_url
        self.issuer = self.config.auth_server.issuer
        self.opaque = OpaqueTokens(self.ring)
        self.binding = LoginBinding.for_public_url(self.base, self.ring)
        self._treq: Any = StubTreq(self.root)

    def other_browser(self) -> AuthServerHarness:
        """The same server seen from another browser: a fresh cookie jar, everything else shared.

        The harness itself is a browser too: its client keeps the cookies it is sent.
        """
        from treq.testing import StubTreq

        other = copy.copy(self)
        other._treq = StubTreq(self.root)
        return other

    # -- plain requests -----------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> HTTPResult:
        """One request (a path is relative to the public URL); redirects are not followed."""
        if url.startswith("/"):
            url = self.base + url
        kwargs: dict[str, Any] = {"allow_redirects": False, "headers": dict(headers or {})}
        if json_body is not None:
            kwargs["data"] = json.dumps(json_body).encode()
            kwargs["headers"].setdefault("Content-Type", "application/json")
        elif data is not None:
            kwargs["data"] = data
        response = self._wait(self._treq.request(method, url, **kwargs))
        body = self._wait(response.content())
        headers_out = {
            k.decode().lower(): [v.decode() for v in vs]
            for k, vs in response.headers.getAllRawHeaders()
        }
        return HTTPResult(code=response.code, headers=headers_out, body=body)

    def _wait(self, d: Deferred[Any]) -> Any:
        self._treq.flush()
        results: list[Any] = []
        d.addBoth(results.append)
        self._treq.flush()
        if not results:
            raise AssertionError("the request did not finish")
        if isinstance(results[0], Failure):
            results[0].raiseException()
        return results[0]

    def get(self, url: str, **kwargs: Any) -> HTTPResult:
        return self.request("GET", url, **kwargs)

    def post_form(self, url: str, form: Mapping[str, str], **kwargs: Any) -> HTTPResult:
        return self.request("POST", url, data=dict(form), **kwargs)

    # -- flows ----------------------------------------------------------------------------
    def register(self, **metadata: Any) -> dict[str, Any]:
        """Register a client (default: a loopback redirect URI) and return the 201 body."""
        document = {"redirect_uris": ["http://127.0.0.1:33418/callback"], **metadata}
        result = self.request("POST", "/oauth/register", json_body=document)
        if result.code != 201:
            raise AssertionError(f"registration failed: {result.code} {result.body!r}")
        body: dict[str, Any] = result.json()
        return body

    def authorize_url(self, client: Mapping[str, Any], challenge: str, **params: str) -> str:
        query = {
            "response_type": "code",
            "client_id": client["client_id"],
            "redirect_uri": client["redirect_uris"][0],
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": "client-state-123",
            **params,
        }
        return "/oauth/authorize?" + urlencode({k: v for k, v in query.items() if v is not None})

    def follow_login(self, authorize_url: str) -> HTTPResult:
        """authorize -> fake IdP -> callback; returns the callback's response (or the first
        response that is not a redirect within authproxy)."""
        result = self.get(authorize_url)
        for _ in range(3):
            location = result.header("location")
            if result.code != 302 or location is None or not location.startswith(self.base):
                return result
            result = self.get(location)
        return result

    def login(self, client: Mapping[str, Any], challenge: str, **params: str) -> dict[str, str]:
        """The parameters the client's redirect URI receives after a successful login."""
        result = self.follow_login(self.authorize_url(client, challenge, **params))
        if result.code != 302:
            raise AssertionError(f"login failed: {result.code} {result.body!r}")
        return result.location_params()

    def redeem(
        self, client: Mapping[str, Any], code: str, verifier: str, **extra: str
    ) -> HTTPResult:
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client["redirect_uris"][0],
            "client_id": client["client_id"],
            "code_verifier": verifier,
            **extra,
        }
        return self.post_form("/oauth/token", {k: v for k, v in form.items() if v is not None})

    def refresh(self, client: Mapping[str, Any], refresh_token: str, **extra: str) -> HTTPResult:
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client["client_id"],
            **extra,
        }
        return self.post_form("/oauth/token", form)

    def tokens(self, client: Mapping[str, Any] | None = None, **params: str) -> dict[str, Any]:
        """Register (unless given a client), log in and redeem: the token response."""
        if client is None:
            client = self.register()
        verifier, challenge = s256_pair()
        callback = self.login(client, challenge, **params)
        result = self.redeem(client, callback["code"], verifier)
        if result.code != 200:
            raise AssertionError(f"redemption failed: {result.code} {result.body!r}")
        body: dict[str, Any] = result.json()
        return body
