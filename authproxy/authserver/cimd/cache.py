"""Metadata documents kept between fetches, and one fetch per URL at a time.

A document is kept for the shorter of ``cache_max_age`` and its Cache-Control max-age
(``no-store``/``no-cache``: not kept); a document that could not be used is remembered for
``FAILURE_TTL`` seconds (at most ``cache_max_age``), so a client retrying a broken URL, or
anyone naming a slow one, does not make authproxy fetch it again and again. The cache holds
at most ``max_entries`` URLs, least recently used leaving first. Kept in memory per process:
a document is public and cheap to fetch again, so replicas need not share it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger

from authproxy.authserver.cimd.addresses import threaded_resolver
from authproxy.authserver.cimd.document import DocumentError, client_from_document
from authproxy.authserver.cimd.fetch import DocumentFetcher, pinned_http
from authproxy.authserver.cimd.url import DocumentURL, document_url
from authproxy.authserver.scopes import ClientScopes
from authproxy.config import ClientMetadataDocumentsConfig
from authproxy.ops.metrics import EventCounters
from authproxy.storage.models import RegisteredClient
from authproxy.tokens import Clock
from authproxy.upstream.single_flight import SingleFlight

FAILURE_TTL = 60.0
MAX_ENTRIES = 1000  # a client is at most ~12 KiB: ~12 MiB at the cap

log = Logger()


class ClientDocuments:
    """client_id URL -> the client its document describes (DocumentError when unusable)."""

    def __init__(
        self,
        settings: ClientMetadataDocumentsConfig,
        fetcher: DocumentFetcher,
        clock: Clock,
        scopes_supported: ClientScopes | Sequence[str],
        max_entries: int = MAX_ENTRIES,
        events: EventCounters | None = None,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._clock = clock
        self._scopes = ClientScopes.of(scopes_supported)
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, RegisteredClient | DocumentError]] = (
            OrderedDict()
        )
        self._flight: SingleFlight[RegisteredClient] = SingleFlight()
        self.fetches = 0  # documents requested from the network
        self._outcomes = (events or EventCounters()).client_document_fetches

    async def resolve(self, client_id: str) -> RegisteredClient:
        """The client of the document at ``client_id``, from the cache or fetched now."""
        url = document_url(client_id, self._settings)
        entry = self._entries.get(url.url)
        if entry is not None:
            expires_at, result = entry
            if expires_at > self._clock.seconds():
                self._entries.move_to_end(url.url)
                if isinstance(result, DocumentError):
                    raise result
                return result
            del self._entries[url.url]
        return await self._flight.run(lambda: self._fetch(url), key=url.url)

    async def _fetch(self, url: DocumentURL) -> RegisteredClient:
        client_id = url.url
        self.fetches += 1
        max_age: float = self._settings.cache_max_age
        outcome = "fetch_failed"
        try:
            fetched = await self._fetcher.fetch(url)
            outcome = "invalid_document"
            client = client_from_document(
                client_id, fetched.body, self._scopes, self._clock.seconds()
            )
        except DocumentError as e:
            self._outcomes.inc(outcome)
            log.warn(
                "Client metadata document {url} refused: {reason}", url=client_id, reason=e.reason
            )
            self._keep(client_id, min(FAILURE_TTL, max_age), e)
            raise
        if fetched.max_age is not None:
            max_age = min(max_age, fetched.max_age)
        self._keep(client_id, max_age, client)
        self._outcomes.inc("success")
        log.info("Client metadata document {url} fetched", url=client_id)
        return client

    def _keep(self, url: str, lifetime: float, result: RegisteredClient | DocumentError) -> None:
        if lifetime <= 0:
            self._entries.pop(url, None)
            return
        self._entries[url] = (self._clock.seconds() + lifetime, result)
        self._entries.move_to_end(url)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)


def client_documents(
    settings: ClientMetadataDocumentsConfig,
    reactor: Any,
    scopes_supported: ClientScopes | Sequence[str],
    events: EventCounters | None = None,
) -> ClientDocuments:
    """The production documents: the system resolver, connections pinned to vetted addresses."""
    fetcher = DocumentFetcher(
        settings,
        reactor,
        threaded_resolver(reactor),
        pinned_http(reactor, settings.fetch_timeout),
    )
    return ClientDocuments(settings, fetcher, reactor, scopes_supported, events=events)
