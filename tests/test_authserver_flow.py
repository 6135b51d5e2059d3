"""The whole authorization server in memory: register, authorize, redeem, refresh, revoke."""

from __future__ import annotations

import html
import re

from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.routes import auth_routes
from authproxy.storage.models import PendingAuthorization
from authproxy.testing.upstream import AuthServerHarness, s256_pair
from tests.test_authserver_token import claims_of


class FlowTests(SynchronousTestCase):
    def test_client_lifecycle(self) -> None:
        h = AuthServerHarness()
        metadata = h.get("/.well-known/oauth-authorization-server").json()
        self.assertEqual(metadata["registration_endpoint"], h.base + "/oauth/register")
        registered = h.request(
            "POST",
            "/oauth/register",
            json_body={
                "redirect_uris": ["http://localhost:6274/oauth/callback"],
                "client_name": "MCP Inspector",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
        self.assertEqual(registered.code, 201)
        client = registered.json()
        verifier, challenge = s256_pair()
        callback = h.login(
            client,
            challenge,
            redirect_uri="http://localhost:6274/oauth/callback",
            state="xyz",
            resource=h.base + "/mcp",
        )
        self.assertEqual((callback["state"], callback["iss"]), ("xyz", h.issuer))
        tokens = h.redeem(
            client,
            callback["code"],
            verifier,
            redirect_uri="http://localhost:6274/oauth/callback",
            resource=h.base + "/mcp",
        ).json()
        claims = claims_of(h, tokens["access_token"])
        self.assertEqual(claims["aud"], h.base + "/mcp")
        h.clock.advance(600)
        refreshed = h.refresh(client, tokens["refresh_token"])
        self.assertEqual(refreshed.code, 200)
        revoked = h.post_form(
            "/oauth/revoke",
            {"token": refreshed.json()["refresh_token"], "client_id": client["client_id"]},
        )
        self.assertEqual(revoked.code, 200)
        self.assertEqual(h.refresh(client, refreshed.json()["refresh_token"]).code, 400)
        self.assertEqual(h.provider.ended_sessions, [claims["tsid"]])

    def test_routes(self) -> None:
        h = AuthServerHarness({"auth_server": {"issuer": "http://127.0.0.1:8080/t"}})
        routes = auth_routes(h.config, h.ring, h.storage, h.provider, h.clock)
        self.assertEqual(
            sorted(routes),
            sorted(
                [
                    "/.well-known/oauth-authorization-server",
                    "/.well-known/oauth-authorization-server/t",
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/t",
                    "/t/.well-known/openid-configuration",
                    "/oauth/register",
                    "/oauth/authorize",
                    "/oauth/callback",
                    "/oauth/token",
                    "/oauth/revoke",
                    "/oauth/userinfo",
                    "/_fake_idp/authorize",
                ]
            ),
        )


class ConsentWiringTests(SynchronousTestCase):
    """The consent step sits between authorize and the IdP (its own tests: test_consent)."""

    def setUp(self) -> None:
        self.h = AuthServerHarness({"auth_server": {"consent": "always"}})
        self.client = self.h.register()
        self.verifier, self.challenge = s256_pair()

    def test_approve_then_login(self) -> None:
        page = self.h.get(self.h.authorize_url(self.client, self.challenge))
        self.assertEqual(page.code, 200)
        self.assertIn("text/html", page.header("content-type") or "")
        fields = dict(re.findall(rb'name="(state|csrf_token)" value="([^"]+)"', page.body))
        self.assertEqual(set(fields), {b"state", b"csrf_token"})
        cookies = "; ".join(c.split(";", 1)[0] for c in page.headers.get("set-cookie", []))
        approved = self.h.post_form(
            "/oauth/consent",
            {
                "state": html.unescape(fields[b"state"].decode()),
                "csrf_token": html.unescape(fields[b"csrf_token"].decode()),
                "decision": "approve",
            },
            headers={"Cookie": cookies},
        )
        self.assertEqual(approved.code, 302, approved.body)
        back = self.h.get(approved.header("location") or "")
        result = self.h.get(back.header("location") or "")
        params = result.location_params()
        self.assertEqual(params["state"], "client-state-123")
        tokens = self.h.redeem(self.client, params["code"], self.verifier)
        self.assertEqual(tokens.code, 200)

    def test_callback_without_consent_refused(self) -> None:
        now = self.h.clock.seconds()
        pending = PendingAuthorization(
            state="s" * 43,
            client_id=self.client["client_id"],
            redirect_uri=self.client["redirect_uris"][0],
            client_state="x",
            code_challenge=self.challenge,
            code_challenge_method="S256",
            scopes=("openid",),
            resource=self.h.base + "/mcp",
            created_at=now,
            expires_at=now + 600,
        )
        self.successResultOf(self.h.storage.logins.put_pending(pending))
        login = self.h.provider.start_login(pending.state)
        idp = self.h.get(login.url)
        # Even the browser holding the login cookie gets no code without the approval.
        cookie = f"{self.h.binding.name(pending.state)}={self.h.binding.value(pending.state)}"
        result = self.h.get(idp.header("location") or "", headers={"Cookie": cookie})
        self.assertEqual(result.code, 400)
        self.assertIsNone(result.header("location"))
        self.assertIn(b"not approved", result.body)

    def test_consent_path_mounted_only_when_used(self) -> None:
        self.assertIn(b"/oauth/consent", self.h.root.exact)
        skip = AuthServerHarness()
        self.assertNotIn(b"/oauth/consent", skip.root.exact)
