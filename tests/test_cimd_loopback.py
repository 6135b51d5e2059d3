"""Client ID metadata documents over a real connection: a twisted.web server on 127.0.0.1
serves the document, fetched by the production fetcher (system resolver, pinned address).

With ``allow_loopback`` the document is fetched and a login completes through the
authorization server; without it, the SSRF rules refuse the same server before connecting.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from authproxy.authserver.cimd.cache import ClientDocuments, client_documents
from authproxy.authserver.cimd.document import DocumentError
from authproxy.config import ClientMetadataDocumentsConfig
from authproxy.testing.upstream import AuthServerHarness, s256_pair
from tests.test_cimd import SCOPES, DocumentResource, vscode_like


class LoopbackDocumentTests(TestCase):
    def setUp(self) -> None:
        self.resource = DocumentResource()
        port = reactor.listenTCP(0, Site(self.resource), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.url = f"http://127.0.0.1:{self.port}/oauth/client.json"
        self.resource.body = json.dumps(vscode_like(self.url)).encode()

    def documents(self, **config: Any) -> ClientDocuments:
        settings = attrs.evolve(ClientMetadataDocumentsConfig(), **config)
        return client_documents(settings, reactor, SCOPES)

    async def refusal(self, documents: ClientDocuments, url: str) -> str:
        try:
            await documents.resolve(url)
        except DocumentError as e:
            return e.description
        raise AssertionError(f"{url} was accepted")

    async def test_login_with_a_document_served_on_loopback(self) -> None:
        documents = self.documents(allow_loopback=True)
        # The first fetch goes over the network; the harness's requests then find it cached.
        fetched = await documents.resolve(self.url)
        self.assertEqual(fetched.client_name, "Visual Studio Code")
        h = AuthServerHarness(
            {"auth_server": {"client_metadata_documents": {"allow_loopback": True}}},
            documents=documents,
        )
        client = {"client_id": self.url, "redirect_uris": ["http://127.0.0.1:33418/"]}
        verifier, challenge = s256_pair()
        callback = h.login(client, challenge)
        tokens = h.redeem(client, callback["code"], verifier)
        self.assertEqual(tokens.code, 200, tokens.body)
        self.assertIn("refresh_token", tokens.json())
        self.assertEqual(self.resource.requests, 1)

    async def test_ssrf_refusals_without_allow_loopback(self) -> None:
        documents = self.documents()
        path = f":{self.port}/oauth/client.json"
        cases = {
            "https://127.0.0.1" + path: "loopback address",
            # the system resolver's answer, told like any internal name (no DNS oracle)
            "https://localhost" + path: "does not resolve to a public address",
            "http://127.0.0.1" + path: "must use https",
        }
        for url, words in cases.items():
            self.assertIn(words, await self.refusal(documents, url), url)
        self.assertEqual(self.resource.requests, 0)

    async def test_redirects_are_not_followed_on_the_wire(self) -> None:
        self.resource.status = 302
        self.resource.headers["Location"] = "http://169.254.169.254/"
        why = await self.refusal(self.documents(allow_loopback=True), self.url)
        self.assertIn("HTTP 302", why)


class HeaderFlood(Protocol):
    """A document server whose response head never ends: header lines, as fast as the
    client reads them (a pull producer, so only what the socket takes is written)."""

    LINE = b"X-A: " + b"a" * 8000 + b"\r\n"

    def __init__(self, closed: Deferred[int]) -> None:
        self.closed = closed
        self.sent = 0

    def connectionMade(self) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")  # type: ignore[union-attr]
        self.transport.registerProducer(self, False)  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        self.sent += len(self.LINE) * 16
        self.transport.write(self.LINE * 16)  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.sent)


class ResponseHeadTests(TestCase):
    async def test_an_endless_response_head_is_cut_off(self) -> None:
        closed: Deferred[int] = Deferred()
        factory = Factory.forProtocol(lambda: HeaderFlood(closed))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        settings = attrs.evolve(ClientMetadataDocumentsConfig(), allow_loopback=True)
        documents = client_documents(settings, reactor, SCOPES)
        url = f"http://127.0.0.1:{port.getHost().port}/client.json"
        with self.assertRaises(DocumentError) as refused:
            await documents.resolve(url)
        self.assertIn("larger than", refused.exception.description)
        # the client hung up once past the cap: the server wrote little more than the cap
        # plus what the sockets' buffers hold (a few MiB), not the GBs of an endless head
        sent = await closed.addTimeout(10, reactor)
        self.assertLess(sent, 64 * 2**20)
