"""The consent step and ``/oauth/consent``: CSRF binding, remembered consent, deny, headers."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request

from authproxy.authserver.consent import ConsentCookies, ConsentResource, ConsentStep
from authproxy.config import Config, config_from_mapping
from authproxy.http.resource import AsyncResource
from authproxy.http.routing import PrefixTable
from authproxy.keys.ring import KeyRing, KeySet, generate_ephemeral_key
from authproxy.storage import Storage
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import PendingAuthorization, RegisteredClient

START = 1_700_000_000.0
PUBLIC = "http://127.0.0.1:8080"
RESOURCE = PUBLIC + "/mcp"
SECRET_A = b"a" * 32
SECRET_B = b"b" * 32
_SIGNING_KEY = generate_ephemeral_key()


def make_config(consent: str = "remember", public_url: str = PUBLIC, **auth: Any) -> Config:
    return config_from_mapping(
        {
            "server": {"public_url": public_url},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"type": "development"},
            "auth_server": {"consent": consent, "consent_lifespan": "1d", **auth},
        }
    )


def make_ring(*secrets: bytes) -> KeyRing:
    return KeyRing(KeySet((_SIGNING_KEY,), secrets or (SECRET_A,)))


def make_client(client_id: str = "client-a", **kw: Any) -> RegisteredClient:
    values: dict[str, Any] = dict(
        client_id=client_id,
        redirect_uris=("http://127.0.0.1:33418/callback",),
        grant_types=("authorization_code", "refresh_token"),
        response_types=("code",),
        scopes=("openid", "profile", "email", "offline_access"),
        client_name="Test Client",
        token_endpoint_auth_method="none",
        created_at=START,
    )
    values.update(kw)
    return RegisteredClient(**values)


def make_pending(state: str, client_id: str = "client-a", **kw: Any) -> PendingAuthorization:
    values: dict[str, Any] = dict(
        state=state,
        client_id=client_id,
        redirect_uri="http://127.0.0.1:33418/callback",
        client_state="client-state-xyz",
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
        scopes=("openid", "offline_access"),
        resource=RESOURCE,
        created_at=START,
        expires_at=START + 600,
    )
    values.update(kw)
    return PendingAuthorization(**values)


class FakeAuthorize(AsyncResource):
    """Stands in for /oauth/authorize after validation: ?state=... of a stored pending."""

    def __init__(self, step: ConsentStep, storage: Storage) -> None:
        super().__init__()
        self.step = step
        self.storage = storage

    async def handle_GET(self, request: Request) -> bytes:
        state = request.args[b"state"][0].decode()
        pending = await self.storage.logins.get_pending(state)
        assert pending is not None
        client = await self.storage.clients.get_client(pending.client_id)
        assert client is not None
        page = await self.step.begin(request, pending, client)
        if page is None:
            request.setResponseCode(302)
            request.setHeader("Location", "https://idp.example/authorize?direct=1")
            return b""
        return page


class ConsentTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.ring = make_ring(SECRET_A)
        self.continued: list[PendingAuthorization] = []
        self.build("remember")

    def build(self, consent: str, public_url: str = PUBLIC) -> None:
        self.config = make_config(consent, public_url)
        self.storage = memory_storage(self.clock)
        self.step = ConsentStep(self.config, self.storage.logins, self.ring, self.clock)

        async def continue_to_upstream(request: Request, pending: PendingAuthorization) -> bytes:
            self.continued.append(pending)
            request.setResponseCode(302)
            request.setHeader("Location", "https://idp.example/authorize?from=consent")
            return b""

        root = PrefixTable()
        root.mount("/authorize", FakeAuthorize(self.step, self.storage))
        root.mount(
            "/oauth/consent",
            ConsentResource(
                self.config, self.storage.logins, self.ring, self.clock, continue_to_upstream
            ),
        )
        self.root = root
        for client_id in ("client-a", "client-b"):
            self.successResultOf(self.storage.clients.add_client(make_client(client_id)))

    # -- helpers ------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kw: Any) -> tuple[Any, bytes]:
        # A fresh client per request: its cookie jar must not send cookies behind the test's back.
        response = self.successResultOf(
            StubTreq(self.root).request(
                method, "http://127.0.0.1:8080" + path, allow_redirects=False, **kw
            )
        )
        body = self.successResultOf(response.content())
        return response, body

    def put_pending(self, state: str, client_id: str = "client-a", **kw: Any) -> None:
        self.successResultOf(self.storage.logins.put_pending(make_pending(state, client_id, **kw)))

    def authorize(self, state: str, cookies: dict[str, str] | None = None) -> tuple[Any, bytes]:
        headers = {}
        if cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return self.request("GET", "/authorize?" + urlencode({"state": state}), headers=headers)

    def show_page(self, state: str, client_id: str = "client-a", **kw: Any) -> dict[str, str]:
        """Store a pending authorization, show its consent page: the browser's cookies and token."""
        self.put_pending(state, client_id, **kw)
        response, body = self.authorize(state)
        self.assertEqual(response.code, 200)
        token = re.search(rb'name="csrf_token" value="([^"]+)"', body)
        assert token is not None
        cookies = set_cookies(response)
        cookies["csrf_token"] = token.group(1).decode()
        return cookies

    def post(
        self,
        fields: dict[str, str],
        cookies: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[Any, bytes]:
        all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        return self.request(
            "POST", "/oauth/consent", data=urlencode(fields).encode(), headers=all_headers
        )

    def decide(self, state: str, seen: dict[str, str], decision: str = "approve") -> Any:
        token = seen["csrf_token"]
        cookies = {k: v for k, v in seen.items() if k != "csrf_token"}
        response, _ = self.post(
            {"state": state, "csrf_token": token, "decision": decision}, cookies
        )
        return response

    def remember_cookie(self, response: Any, client_id: str = "client-a") -> dict[str, str]:
        cookies = ConsentCookies.from_config(self.config, self.ring, self.clock)
        name = cookies.remember_name(client_id)
        value = set_cookies(response)[name]
        return {name: value}

    # -- the page -----------------------------------------------------------------------------

    def test_page_shown_with_framing_and_security_headers(self) -> None:
        self.put_pending("s1")
        response, body = self.authorize("s1")
        self.assertEqual(response.code, 200)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("X-Frame-Options"), ["DENY"])
        csp = headers.getRawHeaders("Content-Security-Policy")[0]
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertIn("default-src 'none'", csp)
        self.assertIn("base-uri 'none'", csp)
        self.assertEqual(headers.getRawHeaders("Cache-Control"), ["no-store"])
        self.assertEqual(headers.getRawHeaders("Referrer-Policy"), ["no-referrer"])
        self.assertEqual(headers.getRawHeaders("X-Content-Type-Options"), ["nosniff"])
        self.assertIn(b"text/html", headers.getRawHeaders("Content-Type")[0].encode())
        self.assertIn(b"calls itself", body)
        self.assertIn(b"127.0.0.1:33418", body)
        self.assertIn(RESOURCE.encode(), body)
        self.assertIn(b"Confirm your identity", body)
        self.assertIn(b"Stay signed in (refresh tokens)", body)
        self.assertIn(b'name="decision" value="approve"', body)
        self.assertIn(b'name="decision" value="deny"', body)
        self.assertIn(b'name="state" value="s1"', body)
        self.assertNotIn(b"<script", body)

    def test_csrf_token_stored_in_pending_and_cookie(self) -> None:
        seen = self.show_page("s1")
        pending = self.successResultOf(self.storage.logins.get_pending("s1"))
        assert pending is not None
        self.assertEqual(pending.csrf_token, seen["csrf_token"])
        self.assertFalse(pending.consented)

    def test_csrf_cookie_attributes(self) -> None:
        self.put_pending("s1")
        response, _ = self.authorize("s1")
        [header] = [
            h for h in response.headers.getRawHeaders("Set-Cookie") if "authproxy-csrf" in h
        ]
        lowered = header.lower()
        self.assertIn("httponly", lowered)
        self.assertIn("samesite=strict", lowered)
        self.assertIn("path=/", lowered)
        self.assertNotIn("secure", lowered)  # plain http loopback

    def test_malicious_client_name_escaped(self) -> None:
        evil = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
        self.successResultOf(
            self.storage.clients.add_client(make_client("client-evil", client_name=evil))
        )
        self.put_pending(
            "s1", "client-evil", scopes=("openid", "<b>odd</b>"), redirect_uri="http://x/<i>"
        )
        response, body = self.authorize("s1")
        self.assertEqual(response.code, 200)
        self.assertNotIn(b"<script>", body)
        self.assertNotIn(b"<img", body)
        self.assertNotIn(b"<b>odd", body)
        self.assertIn(b"&lt;script&gt;alert(1)&lt;/script&gt;", body)
        self.assertIn(b"&lt;b&gt;odd&lt;/b&gt;", body)

    def test_client_name_with_a_lone_surrogate_still_renders(self) -> None:
        # Registration refuses such names now; one stored before must not make a 500.
        self.successResultOf(
            self.storage.clients.add_client(make_client("client-odd", client_name="Odd \ud800 app"))
        )
        self.put_pending("s1", "client-odd")
        response, body = self.authorize("s1")
        self.assertEqual(response.code, 200)
        self.assertIn("Odd \ufffd app".encode(), body)

    # -- CSRF ---------------------------------------------------------------------------------

    def test_approve_continues_to_upstream(self) -> None:
        seen = self.show_page("s1")
        response = self.decide("s1", seen)
        self.assertEqual(response.code, 302)
        self.assertEqual(
            response.headers.getRawHeaders("Location"),
            ["https://idp.example/authorize?from=consent"],
        )
        [pending] = self.continued
        self.assertTrue(pending.consented)
        stored = self.successResultOf(self.storage.logins.get_pending("s1"))
        assert stored is not None
        self.assertTrue(stored.consented)

    def test_csrf_token_required(self) -> None:
        seen = self.show_page("s1")
        cookies = {k: v for k, v in seen.items() if k != "csrf_token"}
        response, body = self.post({"state": "s1", "decision": "approve"}, cookies)
        self.assertEqual(response.code, 400)
        response, body = self.post(
            {"state": "s1", "csrf_token": "", "decision": "approve"}, cookies
        )
        self.assertEqual(response.code, 403)
        self.assertIn(b"could not be verified", body)
        self.assertEqual(self.continued, [])

    def test_wrong_csrf_token(self) -> None:
        seen = self.show_page("s1")
        response = self.decide("s1", {**seen, "csrf_token": "x" * 43})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.continued, [])

    def test_token_of_another_pending_refused(self) -> None:
        seen1 = self.show_page("s1")
        seen2 = self.show_page("s2")
        # The token (and cookie) of s2 presented for s1.
        cookies = {k: v for k, v in {**seen1, **seen2}.items() if k != "csrf_token"}
        response, _ = self.post(
            {"state": "s1", "csrf_token": seen2["csrf_token"], "decision": "approve"}, cookies
        )
        self.assertEqual(response.code, 403)
        self.assertEqual(self.continued, [])
        # Each still works with its own.
        self.assertEqual(self.decide("s2", seen2).code, 302)
        self.assertEqual(self.decide("s1", seen1).code, 302)

    def test_token_without_browser_cookie_refused(self) -> None:
        """An attacker who started a flow knows state and token but not the victim's cookie."""
        seen = self.show_page("s1")
        response = self.decide("s1", {"csrf_token": seen["csrf_token"]})
        self.assertEqual(response.code, 403)
        self.assertEqual(self.continued, [])

    def test_foreign_origin_refused(self) -> None:
        seen = self.show_page("s1")
        cookies = {k: v for k, v in seen.items() if k != "csrf_token"}
        fields = {"state": "s1", "csrf_token": seen["csrf_token"], "decision": "approve"}
        response, _ = self.post(fields, cookies, {"Origin": "https://evil.example"})
        self.assertEqual(response.code, 403)
        response, _ = self.post(fields, cookies, {"Origin": "null"})
        self.assertEqual(response.code, 302)

    def test_unknown_or_expired_state(self) -> None:
        seen = self.show_page("s1")
        self.clock.advance(601)
        response = self.decide("s1", seen)
        self.assertEqual(response.code, 400)
        response, body = self.post({"state": "nope", "csrf_token": "x", "decision": "approve"})
        self.assertEqual(response.code, 400)
        self.assertIn(b"expired", body)
        self.assertIn(b'lang="en"', body)

    def test_unknown_decision_and_bad_form(self) -> None:
        seen = self.show_page("s1")
        self.assertEqual(self.decide("s1", seen, "maybe").code, 400)
        response, body = self.request(
            "POST",
            "/oauth/consent",
            data=b'{"state": "s1"}',
            headers={"Content-Type": "application/json"},
        )
        self.assertEqual(response.code, 400)
        self.assertIn(b"<!DOCTYPE html>", body)

    def test_get_is_an_html_405(self) -> None:
        response, body = self.request("GET", "/oauth/consent")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("Allow"), ["POST"])
        self.assertIn(b"<!DOCTYPE html>", body)

    # -- deny ---------------------------------------------------------------------------------

    def test_deny_redirects_with_access_denied_state_and_iss(self) -> None:
        seen = self.show_page("s1")
        response = self.decide("s1", seen, "deny")
        self.assertEqual(response.code, 302)
        [location] = response.headers.getRawHeaders("Location")
        parts = urlsplit(location)
        self.assertEqual(
            f"{parts.scheme}://{parts.netloc}{parts.path}", make_pending("s").redirect_uri
        )
        query = parse_qs(parts.query)
        self.assertEqual(query["error"], ["access_denied"])
        self.assertTrue(query["error_description"][0])
        self.assertEqual(query["state"], ["client-state-xyz"])
        self.assertEqual(query["iss"], [PUBLIC])
        self.assertEqual(response.headers.getRawHeaders("Cache-Control"), ["no-store"])
        self.assertEqual(self.continued, [])
        # Consumed: the same form cannot be used again, to deny or approve.
        self.assertIsNone(self.successResultOf(self.storage.logins.get_pending("s1")))
        self.assertEqual(self.decide("s1", seen, "approve").code, 400)
        # And nothing is remembered.
        self.assertFalse(
            any("authproxy-consent" in h for h in response.headers.getRawHeaders("Set-Cookie", []))
        )

    def test_deny_without_client_state(self) -> None:
        seen = self.show_page("s1", client_state=None)
        [location] = self.decide("s1", seen, "deny").headers.getRawHeaders("Location")
        query = parse_qs(urlsplit(location).query)
        self.assertNotIn("state", query)
        self.assertEqual(query["error"], ["access_denied"])

    # -- remembered consent -------------------------------------------------------------------

    def test_remember_cookie_attributes(self) -> None:
        response = self.decide("s1", self.show_page("s1"))
        [header] = [
            h for h in response.headers.getRawHeaders("Set-Cookie") if "authproxy-consent-" in h
        ]
        lowered = header.lower()
        self.assertIn("httponly", lowered)
        self.assertIn("samesite=lax", lowered)
        self.assertIn("path=/", lowered)
        self.assertIn(f"max-age={86400}", lowered)
        self.assertNotIn("secure", lowered)
        self.assertFalse(header.startswith("__Host-"))

    def test_https_cookies_are_secure_host_prefixed(self) -> None:
        self.build("remember", "https://mcp.example.com")
        seen = self.show_page("s1")
        self.assertTrue(any(name.startswith("__Host-authproxy-csrf-") for name in seen))
        response = self.decide("s1", seen)
        self.assertEqual(response.code, 302)
        [header] = [
            h for h in response.headers.getRawHeaders("Set-Cookie") if "authproxy-consent-" in h
        ]
        self.assertTrue(header.startswith("__Host-authproxy-consent-"))
        self.assertIn("secure", header.lower())
        self.assertNotIn("domain", header.lower())

    def test_remembered_consent_skips_page_for_same_client(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        self.put_pending("s2")
        response, _ = self.authorize("s2", remembered)
        self.assertEqual(response.code, 302)
        self.assertEqual(
            response.headers.getRawHeaders("Location"), ["https://idp.example/authorize?direct=1"]
        )

    def test_remembered_consent_not_for_other_client(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        self.put_pending("s2", "client-b")
        response, _ = self.authorize("s2", remembered)
        self.assertEqual(response.code, 200)
        # Even when A's value is presented under B's cookie name.
        value = next(iter(remembered.values()))
        cookies = ConsentCookies.from_config(self.config, self.ring, self.clock)
        response, _ = self.authorize("s2", {cookies.remember_name("client-b"): value})
        self.assertEqual(response.code, 200)

    def test_expired_remembered_consent_shows_page(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        self.clock.advance(86400 + 1)
        self.put_pending("s2", created_at=START + 86401, expires_at=START + 86401 + 600)
        response, _ = self.authorize("s2", remembered)
        self.assertEqual(response.code, 200)

    def test_remembered_consent_survives_rotation_until_secret_removed(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        # A new active secret; the old one verifies still.
        self.ring.replace(KeySet((_SIGNING_KEY,), (SECRET_B, SECRET_A)))
        self.put_pending("s2")
        self.assertEqual(self.authorize("s2", remembered)[0].code, 302)
        # The old secret removed: the cookie no longer verifies.
        self.ring.replace(KeySet((_SIGNING_KEY,), (SECRET_B,)))
        self.put_pending("s3")
        self.assertEqual(self.authorize("s3", remembered)[0].code, 200)

    def test_tampered_remembered_consent_shows_page(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        [(name, value)] = remembered.items()
        version, expiry, grant, mac = value.split(".")
        for forged in (
            f"{version}.{int(expiry) + 86400}.{grant}.{mac}",
            f"{version}.{expiry}.{grant}.{mac[:-2]}AA",
            "garbage",
            "1.1.!!.!!",
        ):
            self.put_pending("s-" + forged)
            response, _ = self.authorize("s-" + forged, {name: forged})
            self.assertEqual(response.code, 200, forged)

    def test_remembered_consent_covers_only_the_approved_scopes_and_resource(self) -> None:
        remembered = self.remember_cookie(self.decide("s1", self.show_page("s1")))
        self.put_pending("s2", scopes=("openid",))
        self.assertEqual(self.authorize("s2", remembered)[0].code, 302)
        self.put_pending("s3", scopes=("openid", "email"))
        self.assertEqual(self.authorize("s3", remembered)[0].code, 200)
        self.put_pending("s4", resource=PUBLIC + "/other")
        self.assertEqual(self.authorize("s4", remembered)[0].code, 200)

    # -- modes --------------------------------------------------------------------------------

    def test_always_shows_page_and_sets_no_remember_cookie(self) -> None:
        self.build("always")
        response = self.decide("s1", self.show_page("s1"))
        self.assertEqual(response.code, 302)
        self.assertFalse(
            any("authproxy-consent" in h for h in response.headers.getRawHeaders("Set-Cookie", []))
        )
        # A valid remember cookie (as "remember" mode would set) does not skip the page either.
        cookies = ConsentCookies.from_config(self.config, self.ring, self.clock)
        value = cookies.remember_value(
            "client-a", ("openid", "offline_access"), RESOURCE, "https://app.example/cb"
        )
        self.put_pending("s2")
        response, _ = self.authorize("s2", {cookies.remember_name("client-a"): value})
        self.assertEqual(response.code, 200)

    def test_skip_never_shows_page(self) -> None:
        self.build("skip")
        self.put_pending("s1")
        response, _ = self.authorize("s1")
        self.assertEqual(response.code, 302)
        self.assertEqual(
            response.headers.getRawHeaders("Location"), ["https://idp.example/authorize?direct=1"]
        )
        pending = self.successResultOf(self.storage.logins.get_pending("s1"))
        assert pending is not None
        self.assertEqual(pending.csrf_token, "")


def set_cookies(response: Any) -> dict[str, str]:
    """name -> value of every Set-Cookie of a response."""
    cookies = {}
    for header in response.headers.getRawHeaders("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        cookies[name] = rest.split(";", 1)[0]
    return cookies


def test_pending_fixture_is_frozen() -> None:
    pending = make_pending("s")
    assert attrs.evolve(pending, consented=True).consented
