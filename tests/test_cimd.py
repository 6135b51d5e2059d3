"""Client ID metadata documents: URL rules, SSRF refusals, fetching, validation, caching.

Everything in memory: a fake resolver, StubTreq in front of a document resource, a Clock.
The same rules over a real loopback connection: test_cimd_loopback.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import URI
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authproxy.authserver.cimd.addresses import address_refusal
from authproxy.authserver.cimd.cache import FAILURE_TTL, MAX_FETCHES, ClientDocuments
from authproxy.authserver.cimd.document import DocumentError
from authproxy.authserver.cimd.fetch import DocumentFetcher, PinnedEndpoints, cache_lifetime
from authproxy.authserver.cimd.url import DocumentURL, document_host, document_url
from authproxy.config import ClientMetadataDocumentsConfig

URL = "https://vscode.example/oauth/client-metadata.json"
SCOPES = ("openid", "profile", "email", "offline_access")


def vscode_like(url: str = URL, **changes: Any) -> dict[str, Any]:
    """A copy of the shape of VS Code's real document (device_code grant included)."""
    document: dict[str, Any] = {
        "client_id": url,
        "client_name": "Visual Studio Code",
        "client_uri": "https://code.visualstudio.com/",
        "logo_uri": "https://code.visualstudio.com/assets/favicon.ico",
        "redirect_uris": [
            "http://127.0.0.1:33418/",
            "http://127.0.0.1/",
            "http://localhost/",
            "https://vscode.dev/redirect",
        ],
        "grant_types": [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
        ],
        "response_types": ["code"],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


class DocumentResource(Resource):
    """Serves one document; ``body`` may be streamed in ``chunks`` without a length."""

    isLeaf = True

    def __init__(self, document: Any = None) -> None:
        super().__init__()
        self.body = json.dumps(document if document is not None else vscode_like()).encode()
        self.status = 200
        self.headers: dict[str, str] = {"Content-Type": "application/json"}
        self.chunks: list[bytes] | None = None
        self.requests = 0

    def render_GET(self, request: Request) -> bytes | int:
        self.requests += 1
        request.setResponseCode(self.status)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if self.chunks is None:
            return self.body
        for chunk in self.chunks:  # no Content-Length: the size is only known while reading
            request.write(chunk)
        request.finish()
        return NOT_DONE_YET


@attrs.define
class FakeResolver:
    """host -> addresses; a host missing from ``answers`` never resolves (a hang)."""

    answers: dict[str, Sequence[str]] = attrs.Factory(dict)
    asked: list[str] = attrs.Factory(list)

    def __call__(self, host: str, port: int) -> Deferred[Sequence[str]]:
        self.asked.append(host)
        if host in self.answers:
            return succeed(self.answers[host])
        return Deferred()


def settings(**changes: Any) -> ClientMetadataDocumentsConfig:
    return attrs.evolve(ClientMetadataDocumentsConfig(), **changes)


class Documents:
    """ClientDocuments over a fake network, with what each part saw."""

    def __init__(
        self,
        resource: DocumentResource | None = None,
        max_fetches: int = MAX_FETCHES,
        **config: Any,
    ) -> None:
        self.clock = Clock()
        self.resolver = FakeResolver({"vscode.example": ["93.184.215.14"]})
        self.resource = resource or DocumentResource()
        self.connected: list[str] = []
        self.settings = settings(**config)
        fetcher = DocumentFetcher(self.settings, self.clock, self.resolver, self._http_for)
        self.documents = ClientDocuments(
            self.settings, fetcher, self.clock, SCOPES, max_entries=3, max_fetches=max_fetches
        )

    def _http_for(self, address: str, url: DocumentURL) -> StubTreq:
        self.connected.append(address)
        return StubTreq(self.resource)

    def resolve(self, client_id: str = URL) -> Deferred[Any]:
        return ensureDeferred(self.documents.resolve(client_id))


class DocumentsTestCase(SynchronousTestCase):
    def refusal(self, d: Deferred[Any]) -> str:
        """The description of the DocumentError ``d`` failed with."""
        return self.failureResultOf(d, DocumentError).value.description


class URLTests(DocumentsTestCase):
    def test_document_urls(self) -> None:
        parsed = document_url("https://App.example:8443/c.json", settings())
        self.assertEqual((parsed.host, parsed.port, parsed.scheme), ("app.example", 8443, "https"))
        self.assertEqual(document_host(URL), "vscode.example")
        self.assertIsNone(document_host("registered-client-id"))
        # the port is part of who publishes the document: shown unless the default
        self.assertEqual(
            document_host("https://shared.example.edu:8443/x"), "shared.example.edu:8443"
        )
        self.assertEqual(document_host("https://shared.example.edu:443/x"), "shared.example.edu")

    def test_refused_urls(self) -> None:
        cases = {
            "http://app.example/c.json": "https",
            "https://app.example": "path",
            "https://app.example/": "path",
            "https://app.example/a/../c.json": '".."',
            "https://app.example/c.json#x": "fragment",
            "https://user@app.example/c.json": "userinfo",
            "https://app.example/" + "a" * 600: "longer",
            "http://127.0.0.1/c.json": "https",  # loopback http only with allow_loopback
            # percent-encoded dot segments: a server may decode them into ".." or "."
            "https://app.example/a/%2e%2e/c.json": '".."',
            "https://app.example/a/%2E./c.json": '".."',
            "https://app.example/%2E/c.json": '".."',
            "https://app.example/c.json?v=1": "query",  # one document, one URL
            "https://app.example/c.json?": "query",
        }
        for url, words in cases.items():
            with self.assertRaises(DocumentError, msg=url) as caught:
                document_url(url, settings())
            self.assertIn(words, caught.exception.description, url)

    def test_loopback_http_with_allow_loopback(self) -> None:
        parsed = document_url("http://localhost:8000/c.json", settings(allow_loopback=True))
        self.assertEqual((parsed.host, parsed.port), ("localhost", 8000))
        with self.assertRaises(DocumentError):
            document_url("http://app.example/c.json", settings(allow_loopback=True))

    def test_allowed_hosts(self) -> None:
        allowed = settings(allowed_hosts=("vscode.example", "*.clients.example"))
        for url in (URL, "https://a.clients.example/c.json", "https://x.a.clients.example/c"):
            document_url(url, allowed)
        for url in ("https://other.example/c.json", "https://clients.example/c.json"):
            with self.assertRaises(DocumentError) as caught:
                document_url(url, allowed)
            self.assertIn("does not accept", caught.exception.reason)


class AddressTests(SynchronousTestCase):
    def test_every_internal_class_is_refused(self) -> None:
        cases = {
            "127.0.0.1": "loopback",
            "::1": "loopback",
            "10.1.2.3": "private",
            "172.16.0.1": "private",
            "192.168.1.1": "private",
            "fd00::1": "private",
            "169.254.169.254": "link-local",
            "fe80::1": "link-local",
            "100.64.0.1": "CGNAT",
            "224.0.0.1": "multicast",
            "ff02::1": "multicast",
            "240.0.0.1": "reserved",
            "0.0.0.0": "unspecified",
            "::": "unspecified",
            "::ffff:10.0.0.1": "private",
            "::ffff:127.0.0.1": "loopback",
            "64:ff9b::a9fe:a9fe": "link-local",
            "2002:c0a8:0101::1": "private",  # 6to4 of 192.168.1.1
            "192.0.2.1": "address",  # documentation range: special-purpose, never fetched
            "fec0::1": "site-local",  # deprecated, but still routed inside some networks
            "not-an-ip": "not an IP",
        }
        for address, words in cases.items():
            why = address_refusal(address, allow_loopback=False)
            self.assertIsNotNone(why, address)
            self.assertIn(words, why or "", address)

    def test_public_addresses_and_loopback_when_allowed(self) -> None:
        for address in ("93.184.215.14", "2606:4700::6810:85e5", "::ffff:93.184.215.14"):
            self.assertIsNone(address_refusal(address, allow_loopback=False), address)
        for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
            self.assertIsNone(address_refusal(address, allow_loopback=True), address)
        for address in ("10.0.0.1", "169.254.169.254", "0.0.0.0"):
            self.assertIsNotNone(address_refusal(address, allow_loopback=True), address)


class FetchRefusalTests(DocumentsTestCase):
    def test_a_good_document_becomes_a_client(self) -> None:
        docs = Documents()
        client = self.successResultOf(docs.resolve())
        self.assertEqual(client.client_id, URL)
        self.assertEqual(client.client_name, "Visual Studio Code")
        # device_code is ignored, not refused; refresh_token kept
        self.assertEqual(client.grant_types, ("authorization_code", "refresh_token"))
        self.assertIn("https://vscode.dev/redirect", client.redirect_uris)
        self.assertEqual(client.scopes, SCOPES)
        # connected to the address the resolver gave, and only that one
        self.assertEqual(docs.connected, ["93.184.215.14"])

    def test_names_resolving_to_internal_addresses_are_not_fetched(self) -> None:
        for answer in (["10.0.0.5"], ["93.184.215.14", "169.254.169.254"], ["::1"], []):
            docs = Documents()
            docs.resolver.answers["vscode.example"] = answer
            why = self.refusal(docs.resolve())
            self.assertIn("host", why, answer)
            self.assertEqual((docs.connected, docs.resource.requests), ([], 0), answer)

    def test_internal_and_unknown_names_are_refused_alike(self) -> None:
        """The client learns no more than "not fetched": which internal names exist is the
        log's business (a DNS oracle otherwise)."""
        docs = Documents()
        docs.resolver.answers["intranet.example"] = ["10.0.0.8"]
        docs.resolver.answers["nowhere.example"] = []
        internal = self.refusal(docs.resolve("https://intranet.example/c.json"))
        unknown = self.refusal(docs.resolve("https://nowhere.example/c.json"))
        self.assertEqual(internal, unknown)
        self.assertNotIn("private", internal)

    def test_ip_literals_are_vetted_without_resolving(self) -> None:
        docs = Documents()
        self.assertIn("private", self.refusal(docs.resolve("https://10.0.0.1/c.json")))
        self.assertEqual((docs.resolver.asked, docs.connected), ([], []))

    def test_loopback_allowed_for_development(self) -> None:
        url = "http://localhost:8000/c.json"
        docs = Documents(DocumentResource(vscode_like(url)), allow_loopback=True)
        docs.resolver.answers["localhost"] = ["127.0.0.1", "::1"]
        self.assertEqual(self.successResultOf(docs.resolve(url)).client_id, url)
        self.assertEqual(docs.connected, ["127.0.0.1"])

    def test_redirects_are_not_followed(self) -> None:
        docs = Documents()
        docs.resource.status = 302
        docs.resource.headers["Location"] = "http://169.254.169.254/latest/meta-data"
        self.assertIn("redirects (HTTP 302)", self.refusal(docs.resolve()))

    def test_error_status(self) -> None:
        docs = Documents()
        docs.resource.status = 404
        self.assertIn("HTTP 404", self.refusal(docs.resolve()))

    def test_oversized_by_content_length(self) -> None:
        docs = Documents(DocumentResource(vscode_like(client_name="x" * 6000)))
        self.assertIn("larger than 5120 bytes", self.refusal(docs.resolve()))

    def test_oversized_streaming_body_is_cut_off_while_reading(self) -> None:
        docs = Documents()
        docs.resource.chunks = [b'{"client_id": "' + b"x" * 1000] * 8
        self.assertIn("larger than 2048 bytes", self.refusal(self._small(docs).resolve()))

    def _small(self, docs: Documents) -> Documents:
        docs.settings = settings(max_document_size=2048)
        fetcher = DocumentFetcher(docs.settings, docs.clock, docs.resolver, docs._http_for)
        docs.documents = ClientDocuments(docs.settings, fetcher, docs.clock, SCOPES)
        return docs

    def test_only_json(self) -> None:
        docs = Documents()
        docs.resource.headers["Content-Type"] = "text/html"
        self.assertIn("application/json", self.refusal(docs.resolve()))

    def test_not_json_at_all(self) -> None:
        docs = Documents()
        docs.resource.body = b"{not json"
        self.assertIn("not valid JSON", self.refusal(docs.resolve()))

    def test_timeout(self) -> None:
        docs = Documents()
        docs.resolver.answers.clear()  # the name never resolves
        d = docs.resolve()
        self.assertNoResult(d)
        docs.clock.advance(4.9)
        self.assertNoResult(d)
        docs.clock.advance(0.2)
        self.assertIn("within 5 s", self.refusal(d))


class DocumentRuleTests(DocumentsTestCase):
    def refused(self, document: Any) -> str:
        return self.refusal(Documents(DocumentResource(document)).resolve())

    def test_client_id_must_be_the_url(self) -> None:
        self.assertIn("client_id is not the URL", self.refused(vscode_like(client_id=URL + "x")))
        self.assertIn("client_id is not the URL", self.refused(vscode_like(client_id=None)))

    def test_redirect_uris_required_and_checked(self) -> None:
        self.assertIn("redirect_uris is required", self.refused(vscode_like(redirect_uris=None)))
        why = self.refused(vscode_like(redirect_uris=["http://evil.example/cb"]))
        self.assertIn("not loopback", why)

    def test_no_client_secret(self) -> None:
        for field in ("client_secret", "client_secret_expires_at"):
            self.assertIn("client secret", self.refused(vscode_like(**{field: "s3cret"})))

    def test_auth_methods(self) -> None:
        self.assertIn(
            "private_key_jwt",
            self.refused(vscode_like(token_endpoint_auth_method="private_key_jwt")),
        )
        self.assertIn(
            '"none"', self.refused(vscode_like(token_endpoint_auth_method="client_secret_basic"))
        )

    def test_authorization_code_must_be_allowed(self) -> None:
        why = self.refused(vscode_like(grant_types=["refresh_token"]))
        self.assertIn("authorization_code", why)

    def test_not_an_object(self) -> None:
        self.assertIn("not a JSON object", self.refused([URL]))

    def test_unknown_scopes_are_ignored(self) -> None:
        docs = Documents(DocumentResource(vscode_like(scope="openid calendar.read")))
        self.assertEqual(self.successResultOf(docs.resolve()).scopes, ("openid",))

    def test_string_caps_apply(self) -> None:
        self.assertIn("client_name is longer", self.refused(vscode_like(client_name="n" * 300)))


class CacheTests(DocumentsTestCase):
    def test_kept_for_cache_max_age(self) -> None:
        docs = Documents(cache_max_age=3600.0)
        self.successResultOf(docs.resolve())
        docs.clock.advance(3599)
        self.successResultOf(docs.resolve())
        self.assertEqual(docs.resource.requests, 1)
        docs.clock.advance(2)
        self.successResultOf(docs.resolve())
        self.assertEqual(docs.resource.requests, 2)

    def test_cache_control_max_age_below_the_bound(self) -> None:
        docs = Documents()
        docs.resource.headers["Cache-Control"] = "public, max-age=60"
        self.successResultOf(docs.resolve())
        docs.clock.advance(59)
        self.successResultOf(docs.resolve())
        docs.clock.advance(2)
        self.successResultOf(docs.resolve())
        self.assertEqual(docs.resource.requests, 2)

    def test_no_store_is_not_kept(self) -> None:
        docs = Documents()
        docs.resource.headers["Cache-Control"] = "no-store"
        self.successResultOf(docs.resolve())
        self.successResultOf(docs.resolve())
        self.assertEqual(docs.resource.requests, 2)

    def test_cache_lifetime(self) -> None:
        self.assertEqual(cache_lifetime('max-age="30", public'), 30.0)
        self.assertEqual(cache_lifetime("no-cache"), 0.0)
        self.assertIsNone(cache_lifetime("public"))

    def test_failures_are_kept_briefly(self) -> None:
        docs = Documents()
        docs.resource.status = 500
        self.refusal(docs.resolve())
        docs.resource.status = 200
        self.assertIn("HTTP 500", self.refusal(docs.resolve()))
        self.assertEqual(docs.resource.requests, 1)
        docs.clock.advance(FAILURE_TTL + 1)
        self.successResultOf(docs.resolve())
        self.assertEqual(docs.resource.requests, 2)

    def test_one_fetch_in_flight_per_url(self) -> None:
        docs = Documents()
        slow: Deferred[Sequence[str]] = Deferred()
        docs.resolver.answers.clear()
        docs.documents._fetcher._resolve = lambda host, port: slow  # type: ignore[attr-defined]
        first, second = docs.resolve(), docs.resolve()
        self.assertNoResult(first)
        slow.callback(["93.184.215.14"])
        self.assertEqual(self.successResultOf(first), self.successResultOf(second))
        self.assertEqual((docs.documents.fetches, docs.resource.requests), (1, 1))

    def test_bounded(self) -> None:
        docs = Documents()  # max_entries=3
        urls = [f"https://vscode.example/c{i}.json" for i in range(4)]
        for url in urls:
            docs.resource.body = json.dumps(vscode_like(url)).encode()
            self.successResultOf(docs.resolve(url))
        self.assertEqual(len(docs.documents._entries), 3)
        self.assertNotIn(urls[0], docs.documents._entries)


class PinnedEndpointTests(SynchronousTestCase):
    def test_connects_to_the_vetted_address_whatever_the_url_names(self) -> None:
        reactor = MemoryReactorClock()
        endpoints = PinnedEndpoints(reactor, "93.184.215.14", 5.0, 8192)
        endpoint = endpoints.endpointForURI(URI.fromBytes(b"https://vscode.example/c.json"))
        endpoint.connect(Factory.forProtocol(Protocol))
        host, port = reactor.tcpClients[0][:2]
        self.assertEqual((host, port), ("93.184.215.14", 443))
        six = PinnedEndpoints(reactor, "2606:4700::1", 5.0, 8192)
        six.endpointForURI(URI.fromBytes(b"http://localhost:8000/c")).connect(
            Factory.forProtocol(Protocol)
        )
        self.assertEqual(reactor.tcpClients[1][:2], ("2606:4700::1", 8000))
