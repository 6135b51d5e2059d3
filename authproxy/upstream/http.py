"""HTTP to the upstream IdP: one total timeout per request, bounded bodies, JSON or form answers.

Every failure that a retry may cure (timeout, refused connection, 5xx, 429) becomes
``UpstreamUnavailable``; everything else is handed back as an ``IdPResponse`` for the caller
to judge. No URL query, header or body is ever logged or put in an exception message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse

from authproxy.http.bounded_body import read_bounded
from authproxy.http.deadline import within_deadline
from authproxy.http.json import loads_untrusted
from authproxy.ops.metrics import EventCounters
from authproxy.upstream.interface import UpstreamError, UpstreamUnavailable

#: IdP documents (discovery, JWKS, token, userinfo answers) are small; refuse anything bigger.
MAX_BODY = 1024 * 1024
#: Retry-After (seconds) suggested to clients when the IdP gives none.
DEFAULT_RETRY_AFTER = 5


@attrs.frozen(repr=False)
class IdPResponse:
    """A complete IdP answer: status and parsed body (JSON object or form fields)."""

    status: int
    body: dict[str, Any]

    def __repr__(self) -> str:
        # bodies carry tokens: never show them
        return f"IdPResponse(status={self.status})"


def parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    """A JSON object, or form fields (GitHub answers form-encoded by default); {} otherwise."""
    media = content_type.split(";", 1)[0].strip().lower()
    text = raw.decode("utf-8", "replace")
    if media in ("application/x-www-form-urlencoded", "text/plain") and not text.startswith("{"):
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        value = loads_untrusted(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _retry_after(response: IResponse) -> int:
    values = response.headers.getRawHeaders(b"retry-after") or []
    try:
        return max(1, min(3600, int(values[0])))
    except (IndexError, ValueError):
        return DEFAULT_RETRY_AFTER


def _outcome(result: Any, timed_out: bool) -> str:
    """An IdP request's outcome label: ok, http_4xx, timeout, unavailable, error, cancelled."""
    if isinstance(result, IdPResponse):
        return "ok" if result.status < 400 else "http_4xx"
    if timed_out:
        return "timeout"
    if result.check(UpstreamUnavailable):
        return "unavailable"  # refused, 5xx, 429
    if result.check(defer.CancelledError):
        return "cancelled"
    if result.check(UpstreamError):
        return "error"  # too large
    return "unavailable"  # network, DNS, TLS


class IdPHTTP:
    """Requests to the IdP through a treq client, each bounded by ``timeout`` seconds in total."""

    def __init__(
        self,
        http: Any,
        clock: IReactorTime,
        timeout: float,
        pool: HTTPConnectionPool | None = None,
    ) -> None:
        self._http = http
        self._clock = clock
        self.timeout = timeout
        self.pool = pool
        #: Where each request's endpoint, outcome and latency are counted (/metrics).
        self.events = EventCounters()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        form: Mapping[str, str] | None = None,
        endpoint: str = "other",
    ) -> Deferred[IdPResponse]:
        """Send the request; fails with UpstreamUnavailable on timeout, network error, 5xx, 429.

        ``endpoint`` names it in /metrics: token, refresh, userinfo, jwks, discovery, revocation.
        """
        started = self._clock.seconds()
        d = ensureDeferred(self._request(method, url, dict(headers or {}), form))

        def classify(result: Any, timed_out: bool) -> Any:
            self.events.upstream_request(
                endpoint, _outcome(result, timed_out), self._clock.seconds() - started
            )
            if not isinstance(result, Failure) or result.check(UpstreamError):
                return result
            if timed_out:
                raise UpstreamUnavailable(
                    f"the identity provider did not answer within {self.timeout:g} s"
                )
            if result.check(defer.CancelledError):
                return result
            # connection refused, DNS, TLS verification, connection lost mid-answer ...
            name = getattr(result.type, "__name__", "error")
            raise UpstreamUnavailable(f"cannot reach the identity provider ({name})")

        return within_deadline(d, self._clock, self.timeout, classify)

    async def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        form: Mapping[str, str] | None,
    ) -> IdPResponse:
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if form is not None:
            kwargs["data"] = dict(form)
        response = await self._http.request(method, url, **kwargs)
        if response.code >= 500 or response.code == 429:
            retry_after = _retry_after(response)
            response.deliverBody(Protocol())  # discard the error page
            raise UpstreamUnavailable(
                f"the identity provider answered HTTP {response.code}", retry_after
            )
        raw = await read_bounded(response, MAX_BODY)
        if raw is None:
            raise UpstreamError("the identity provider's answer is too large")
        content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        ctype = content_type.decode("latin-1")
        return IdPResponse(response.code, parse_body(ctype, raw))


class ConnectionPoolService(Service):
    """Closes the IdP connection pool's idle connections at shutdown."""

    name = "upstream-http-pool"

    def __init__(self, pool: HTTPConnectionPool) -> None:
        self._pool = pool

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return self._pool.closeCachedConnections()


def default_idp_http(reactor: Any, timeout: float) -> IdPHTTP:
    """treq over a persistent pool; https verified by Twisted's default (service-identity) policy."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    agent = Agent(reactor, pool=pool, connectTimeout=min(timeout, 5.0))
    return IdPHTTP(HTTPClient(agent), reactor, timeout, pool=pool)


def idp_http_for(reactor: Any, timeout: float, http: Any = None) -> IdPHTTP:
    """``http`` (a treq ``HTTPClient`` or ``StubTreq``) bounded by ``timeout``; by default
    treq over a persistent pool (``default_idp_http``)."""
    if http is None:
        return default_idp_http(reactor, timeout)
    return IdPHTTP(http, reactor, timeout)
