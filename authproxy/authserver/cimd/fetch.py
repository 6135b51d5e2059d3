"""Fetching one metadata document: the vetted address only, no redirects, bounded in size
and time, JSON only.

The HTTP client is made per fetch (``pinned_http``), its connections going to the address
``addresses`` vetted while TLS still verifies the URL's host name. Fetches are rare (the
cache answers the rest), so no connection is kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import optionsForClientTLS
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.client import (
    URI,
    Agent,
    HTTPConnectionPool,
    ResponseFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IAgentEndpointFactory, IResponse
from zope.interface import implementer

from authproxy.authserver.cimd.addresses import Resolve, literal_address, vetted_address
from authproxy.authserver.cimd.document import DocumentError, DocumentsBusy
from authproxy.authserver.cimd.url import DocumentURL
from authproxy.config import ClientMetadataDocumentsConfig
from authproxy.http.bounded_body import read_bounded
from authproxy.http.deadline import within_deadline
from authproxy.http.json import loads_untrusted

#: (vetted address, document URL) -> a treq-like client whose connections go to that address
HTTPFor = Callable[[str, DocumentURL], Any]

_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)\"?")


@attrs.frozen
class FetchedDocument:
    """A document's parsed JSON and how long its Cache-Control lets it be kept (None: no
    max-age given; 0: no-store or no-cache)."""

    body: object
    max_age: float | None


def cache_lifetime(cache_control: str) -> float | None:
    """The seconds Cache-Control allows keeping a response (0 for no-store/no-cache)."""
    directives = cache_control.lower()
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    match = _MAX_AGE.search(directives)
    return float(match.group(1)) if match else None


def _header(response: IResponse, name: bytes) -> str:
    values = response.headers.getRawHeaders(name) or [b""]
    return b", ".join(values).decode("latin-1")


class DocumentFetcher:
    """GET one document URL with the SSRF rules, the size cap and the timeout of ``settings``."""

    def __init__(
        self,
        settings: ClientMetadataDocumentsConfig,
        clock: IReactorTime,
        resolve: Resolve,
        http_for: HTTPFor,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._resolve = resolve
        self._http_for = http_for

    def fetch(self, url: DocumentURL) -> Deferred[FetchedDocument]:
        """The document, or DocumentError (also when it takes longer than fetch_timeout);
        DocumentsBusy when the resolver is."""
        resolving = _Resolving()
        d = ensureDeferred(self._fetch(url, resolving))
        timeout = self._settings.fetch_timeout

        def classify(result: Any, timed_out: bool) -> Any:
            if not isinstance(result, Failure) or result.check(DocumentError, DocumentsBusy):
                return result
            if timed_out:
                raise DocumentError(
                    f"the client metadata document did not arrive within {timeout:g} s",
                    host_wide=resolving.now,  # its name server does not answer
                )
            if result.check(defer.CancelledError):
                return result
            if result.check(ResponseFailed, ResponseNeverReceived):
                reasons: list[Failure] = result.value.reasons  # type: ignore[union-attr]
                for reason in reasons:  # the connection's cap said why
                    if reason.check(DocumentError):
                        return reason
            name = getattr(result.type, "__name__", "error")
            raise DocumentError(f"the client metadata document could not be fetched ({name})")

        return within_deadline(d, self._clock, timeout, classify)

    async def _fetch(self, url: DocumentURL, resolving: _Resolving) -> FetchedDocument:
        literal = literal_address(url.host) is not None
        addresses = await self._addresses(url)
        address = vetted_address(addresses, self._settings.allow_loopback, literal)
        resolving.now = False
        http = self._http_for(address, url)
        response = await http.get(
            url.url, headers={"Accept": "application/json"}, allow_redirects=False
        )
        if response.code != 200:
            response.deliverBody(Protocol())  # not read
            if 300 <= response.code < 400:
                raise DocumentError(
                    f"the client metadata document URL redirects (HTTP {response.code}), "
                    "and redirects are not followed"
                )
            raise DocumentError(f"the client metadata document URL answered HTTP {response.code}")
        media = _header(response, b"content-type").partition(";")[0].strip().lower()
        if media != "application/json":
            response.deliverBody(Protocol())
            raise DocumentError("the client metadata document is not served as application/json")
        raw = await self._read(response)
        try:
            body = loads_untrusted(raw)
        except (ValueError, UnicodeDecodeError):
            raise DocumentError("the client metadata document is not valid JSON") from None
        return FetchedDocument(body, cache_lifetime(_header(response, b"cache-control")))

    async def _addresses(self, url: DocumentURL) -> list[str]:
        literal = literal_address(url.host)
        if literal:
            return [literal]
        try:
            return list(await self._resolve(url.host, url.port))
        except OSError:  # getaddrinfo's gaierror: the name does not resolve
            return []

    async def _read(self, response: IResponse) -> bytes:
        limit = self._settings.max_document_size
        raw = await read_bounded(response, limit)
        if raw is None:
            raise DocumentError(f"the client metadata document is larger than {limit} bytes")
        return raw


@attrs.define
class _Resolving:
    """Whether a fetch is still resolving its host name (so a timeout is the host's)."""

    now: bool = True


#: bytes a response may carry beyond max_document_size: its head (status line, headers)
#: and chunk framing. Twisted's client parser caps each header line, not their number.
HEAD_ALLOWANCE = 16 * 1024


class _CappedProtocol(ProtocolWrapper):
    """Counts every byte received (head included) and hangs up past the factory's limit."""

    factory: _CappedFactory
    received = 0
    exceeded = False

    def dataReceived(self, data: bytes) -> None:
        if self.exceeded:
            return
        self.received += len(data)
        if self.received > self.factory.limit:
            self.exceeded = True
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.exceeded:  # what the fetch fails with, rather than "connection aborted"
            reason = Failure(DocumentError(self.factory.too_large))
        super().connectionLost(reason)


class _CappedFactory(WrappingFactory):
    protocol = _CappedProtocol

    def __init__(self, wrapped: IProtocolFactory, limit: int, too_large: str) -> None:
        super().__init__(wrapped)
        self.limit = limit
        self.too_large = too_large


@implementer(IStreamClientEndpoint)
@attrs.frozen
class _CappedEndpoint:
    """``endpoint``, its connections cut off after ``limit`` bytes received."""

    endpoint: IStreamClientEndpoint
    limit: int

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        too_large = f"the client metadata document's response is larger than {self.limit} bytes"
        wrapping = _CappedFactory(factory, self.limit, too_large)
        connecting: Deferred[Any] = self.endpoint.connect(wrapping)
        return connecting.addCallback(_unwrapped)


def _unwrapped(wrapper: ProtocolWrapper) -> IProtocol:
    return wrapper.wrappedProtocol


@implementer(IAgentEndpointFactory)
@attrs.frozen
class PinnedEndpoints:
    """Connections to one vetted address, whatever host the URL names; https verified
    against the URL's host name, as if connecting to it; at most ``received_limit`` bytes
    (decrypted) received on each, head and body together."""

    reactor: Any
    address: str
    timeout: float
    received_limit: int

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        tcp = TCP6ClientEndpoint if ":" in self.address else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = tcp(
            self.reactor, self.address, uri.port, timeout=self.timeout
        )
        if uri.scheme == b"https":
            host = uri.host.decode("ascii").strip("[]")
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return _CappedEndpoint(endpoint, self.received_limit)


def pinned_http(reactor: Any, timeout: float, max_document_size: int) -> HTTPFor:
    """Production ``HTTPFor``: treq over an Agent that connects only to the vetted address
    and reads at most ``max_document_size`` + ``HEAD_ALLOWANCE`` bytes."""

    def http_for(address: str, url: DocumentURL) -> HTTPClient:
        pool = HTTPConnectionPool(reactor, persistent=False)
        limit = max_document_size + HEAD_ALLOWANCE
        endpoints = PinnedEndpoints(reactor, address, timeout, limit)
        return HTTPClient(Agent.usingEndpointFactory(reactor, endpoints, pool=pool))

    return http_for
