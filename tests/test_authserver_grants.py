"""The grant registry: the token endpoint, registration and metadata all read it."""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver import register
from authproxy.authserver.grants import GRANTS, GrantRegistry
from authproxy.authserver.grants.authorization_code import AuthorizationCodeGrant
from authproxy.authserver.grants.issuance import TokenIssuance
from authproxy.authserver.grants.refresh_token import RefreshTokenGrant
from authproxy.storage.models import RegisteredClient
from authproxy.testing.upstream import AuthServerHarness


class EchoGrant:
    """A stand-in for a future grant (token exchange): one class, one registration."""

    grant_type: ClassVar[str] = "urn:example:echo"
    creates_family: ClassVar[bool] = False

    def __init__(self, tokens: TokenIssuance) -> None:
        self.tokens = tokens

    async def exchange(self, client: RegisteredClient, params: dict[str, str]) -> dict[str, Any]:
        return {"echo": params.get("value", "")}


class RegistryTests(SynchronousTestCase):
    def test_default_grants(self) -> None:
        self.assertEqual(GRANTS.grant_types, ("authorization_code", "refresh_token"))
        handlers = GRANTS.handlers(tokens=None)  # type: ignore[arg-type]
        self.assertIsInstance(handlers["authorization_code"], AuthorizationCodeGrant)
        self.assertIsInstance(handlers["refresh_token"], RefreshTokenGrant)
        self.assertNotIn("password", handlers)

    def test_metadata_and_registration_read_the_registry(self) -> None:
        h = AuthServerHarness()
        metadata = h.get("/.well-known/oauth-authorization-server").json()
        self.assertEqual(metadata["grant_types_supported"], list(GRANTS.grant_types))
        self.assertEqual(register.SUPPORTED_GRANT_TYPES, GRANTS.grant_types)
        client = h.register()
        self.assertEqual(tuple(client["grant_types"]), GRANTS.grant_types)

    def test_unknown_grant_is_unsupported(self) -> None:
        h = AuthServerHarness()
        client = h.register()
        result = h.post_form(
            "/oauth/token", {"grant_type": "urn:example:echo", "client_id": client["client_id"]}
        )
        self.assertEqual((result.code, result.json()["error"]), (400, "unsupported_grant_type"))

    def test_a_new_grant_is_one_registration(self) -> None:
        registry = GrantRegistry([AuthorizationCodeGrant, RefreshTokenGrant, EchoGrant])
        self.assertEqual(registry.grant_types[-1], "urn:example:echo")
        handlers = registry.handlers(tokens=None)  # type: ignore[arg-type]
        client = RegisteredClient(
            client_id="echoer",
            redirect_uris=(),
            grant_types=("urn:example:echo",),
            response_types=(),
            scopes=(),
            client_name=None,
            token_endpoint_auth_method="none",
            created_at=0.0,
        )
        answer = ensureDeferred(handlers["urn:example:echo"].exchange(client, {"value": "hi"}))
        self.assertEqual(self.successResultOf(answer), {"echo": "hi"})
