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
from authproxy.authserver.cimd.document import (
    DocumentError,
    DocumentsBusy,
    client_from_document,
)
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
#: documents fetched at once, all URLs together; beyond, DocumentsBusy (each fetch ends
#: within fetch_timeout, so a slot frees within seconds)
MAX_FETCHES = 16

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
        max_fetches: int = MAX_FETCHES,
    ) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self._clock = clock
        self._scopes = ClientScopes.of(scopes_supported)
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, RegisteredClient | DocumentError]] = (
            OrderedDict()
        )
        # host name -> a failure every URL on it shares (it does not resolve, or not to a
        # fetchable address): distinct URLs on one host are not resolved again and again
        self._hosts: OrderedDict[str, tuple[float, RegisteredClient | DocumentError]] = (
            OrderedDict()
        )
        self._max_fetches = max_fetches
        self._fetching = 0
        self._flight: SingleFlight[RegisteredClient] = SingleFlight()
        self.fetches = 0  # documents requested from the network
        self._outcomes = (events or EventCounters()).client_document_fetches

    async def resolve(self, client_id: str) -> RegisteredClient:
        """The client of the document at ``client_id``, from the cache or fetched now."""
        url = document_url(client_id, self._settings)
        kept = self._kept(self._entries, url.url) or self._kept(self._hosts, url.host)
        if kept is not None:
            if isinstance(kept, DocumentError):
                raise kept
            return kept
        return await self._flight.run(lambda: self._fetch(url), key=url.url)

    def _kept(
        self, entries: OrderedDict[str, tuple[float, RegisteredClient | DocumentError]], key: str
    ) -> RegisteredClient | DocumentError | None:
        entry = entries.get(key)
        if entry is None:
            return None
        expires_at, result = entry
        if expires_at <= self._clock.seconds():
            del entries[key]
            return None
        entries.move_to_end(key)
        return result

    async def _fetch(self, url: DocumentURL) -> RegisteredClient:
        if self._fetching >= self._max_fetches:
            raise DocumentsBusy(f"{self._fetching} client metadata documents are being fetched")
        self._fetching += 1
        try:
            return await self._fetch_now(url)
        finally:
            self._fetching -= 1

    async def _fetch_now(self, url: DocumentURL) -> RegisteredClient:
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
                "Client metadata document {url} refused: {reason}",
                url=client_id,
                reason=e.log_text,
            )
            lifetime = min(FAILURE_TTL, max_age)
            self._keep(self._entries, client_id, lifetime, e)
            if e.host_wide:
                self._keep(self._hosts, url.host, lifetime, e)
            raise
        if fetched.max_age is not None:
            max_age = min(max_age, fetched.max_age)
        self._keep(self._entries, client_id, max_age, client)
        self._outcomes.inc("success")
        log.info("Client metadata document {url} fetched", url=client_id)
        return client

    def _keep(
        self,
        entries: OrderedDict[str, tuple[float, RegisteredClient | DocumentError]],
        key: str,
        lifetime: float,
        result: RegisteredClient | DocumentError,
    ) -> None:
        if lifetime <= 0:
            entries.pop(key, None)
            return
        entries[key] = (self._clock.seconds() + lifetime, result)
        entries.move_to_end(key)
        while len(entries) > self._max_entries:
            entries.popitem(last=False)


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
        pinned_http(reactor, settings.fetch_timeout, settings.max_document_size),
    )
    return ClientDocuments(settings, fetcher, reactor, scopes_supported, events=events)
