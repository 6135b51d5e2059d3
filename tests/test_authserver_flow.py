"""The whole authorization server in memory: register, authorize, redeem, refresh, revoke."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy._testing_upstream import AuthServerHarness, s256_pair
from authproxy.authserver.routes import auth_routes
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
                    "/_fake_idp/authorize",
                ]
            ),
        )
