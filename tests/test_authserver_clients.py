"""The one client resolver: every endpoint that meets a client_id asks it."""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from authproxy.authserver.clients import ClientResolver, authenticated_client
from authproxy.http.responses import OAuthError
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import RegisteredClient

CLIENT = RegisteredClient(
    client_id="client-1",
    redirect_uris=("http://127.0.0.1/cb",),
    grant_types=("authorization_code",),
    response_types=("code",),
    scopes=("openid",),
    client_name=None,
    token_endpoint_auth_method="none",
    created_at=0.0,
)


class ResolverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.storage = memory_storage(Clock()).clients
        self.successResultOf(self.storage.add_client(CLIENT))
        self.clients = ClientResolver(self.storage)

    def test_registered_clients_come_from_storage(self) -> None:
        self.assertEqual(
            self.successResultOf(ensureDeferred(self.clients.resolve("client-1"))), CLIENT
        )
        self.assertIsNone(self.successResultOf(ensureDeferred(self.clients.resolve("nobody"))))

    def test_authentication_asks_the_resolver(self) -> None:
        found = ensureDeferred(
            authenticated_client(self.clients, DummyRequest([]), {"client_id": "client-1"})
        )
        self.assertEqual(self.successResultOf(found), CLIENT)
        unknown = ensureDeferred(
            authenticated_client(self.clients, DummyRequest([]), {"client_id": "x"})
        )
        error = self.failureResultOf(unknown, OAuthError).value
        self.assertEqual((error.status, error.error), (401, "invalid_client"))

    def test_another_resolver_stands_in(self) -> None:
        """A resolver with another source (client ID metadata documents, next) needs no
        change in the endpoints: they only call ``resolve``."""

        class Elsewhere(ClientResolver):
            async def resolve(self, client_id: str) -> RegisteredClient | None:
                return CLIENT if client_id == "https://app.example/client.json" else None

        request = DummyRequest([])
        found = authenticated_client(
            Elsewhere(self.storage), request, {"client_id": "https://app.example/client.json"}
        )
        self.assertEqual(self.successResultOf(ensureDeferred(found)), CLIENT)
