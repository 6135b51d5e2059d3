"""A per-key token bucket on the injected clock, and the request's source address.

Used by dynamic client registration and authorize (open endpoints that create server-side
state must not let one address fill a table: clients, logins in progress), and by the token
and revocation endpoints (per client and per source address).

Every limit counts a source by :func:`source_key`: an IPv6 host usually owns a whole /64,
so counting exact IPv6 addresses would give one attacker 2^64 fresh buckets.
"""

from __future__ import annotations

import math

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.http.errors import OAuthError
from authproxy.http.responses import TrustedProxies, ip_address_of, source_key
from authproxy.ops.metrics import EventCounters
from authproxy.storage.rates import IRateCounters

_log = Logger()


class TokenBucketLimiter:
    """``rate_count`` events per ``rate_period`` seconds per key, with bursts up to ``rate_count``.

    The buckets live in ``counters`` (storage's rate counters, shared by every limiter):
    ``name`` keeps this limiter's keys apart from the others'.
    """

    def __init__(
        self,
        counters: IRateCounters,
        rate_count: int,
        rate_period: float,
        name: str = "",
        events: EventCounters | None = None,
    ) -> None:
        if rate_count < 1 or rate_period <= 0:
            raise ValueError("rate_count must be >= 1 and rate_period > 0")
        self._counters = counters
        self._capacity = float(rate_count)
        self._per_second = rate_count / rate_period
        self._prefix = f"{name}\0"
        self._refused = (events or EventCounters()).rate_limit_refusals
        self.name = name or "unnamed"

    def acquire(self, key: str) -> Deferred[float]:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is available."""
        return self._counters.take(self._prefix + key, self._capacity, self._per_second)

    @staticmethod
    def retry_after(wait: float) -> str:
        """A Retry-After header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))

    async def refuse(self, address: str, action: str) -> str | None:
        """Count one ``action`` ("Registration") from the source ``address`` (by its
        :func:`source_key`).

        None when it is allowed; else it is logged and the Retry-After value is returned for
        the endpoint's own refusal (an OAuth error, an HTML page).
        """
        wait = await self.acquire(source_key(address))
        if wait <= 0:
            return None
        self._refused.inc(self.name)
        _log.warn("{action} rate limit hit by {address}", action=action, address=address)
        return self.retry_after(wait)

    async def refuse_client(self, client_id: str, action: str) -> str | None:
        """Like :meth:`refuse`, counting by client rather than by source address."""
        wait = await self.acquire(client_id)
        if wait <= 0:
            return None
        self._refused.inc(self.name)
        _log.warn(
            "{action} rate limit hit by client {client_id}", action=action, client_id=client_id
        )
        return self.retry_after(wait)


@attrs.frozen
class ClientRequestLimits:
    """The limits of the token and revocation endpoints, which share them: one bucket per
    client and one per source address, so neither many clients behind one address nor one
    client from many addresses can refresh and revoke at will."""

    per_client: TokenBucketLimiter
    per_source: TokenBucketLimiter
    trusted: TrustedProxies

    @staticmethod
    def _too_many(retry_after: str, who: str) -> OAuthError:
        return OAuthError(
            "too_many_requests",
            f"too many token requests from this {who}; try again later",
            status=429,
            headers={"Retry-After": retry_after},
        )

    async def check_source(self, request: Request, action: str) -> None:
        """Raise a 429 OAuthError when the request's source is over its rate."""
        address = source_address(request, self.trusted)
        retry_after = await self.per_source.refuse(address, action)
        if retry_after is not None:
            raise self._too_many(retry_after, "address")

    async def check_client(self, client_id: str, action: str) -> None:
        """Raise a 429 OAuthError when the (authenticated) client is over its rate."""
        retry_after = await self.per_client.refuse_client(client_id, action)
        if retry_after is not None:
            raise self._too_many(retry_after, "client")


def source_address(request: Request, trusted: TrustedProxies) -> str:
    """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy.

    The header is read right to left, skipping trusted proxies, so a client cannot choose the
    address it is counted under by sending its own X-Forwarded-For. Only IP addresses are
    hops: at anything else the reading stops at the trusted proxy that passed it on, so a
    forged value is never a bucket or a log field. When every hop is trusted, the leftmost
    is the client (itself inside a trusted network).
    """
    peer = getattr(request.getClientAddress(), "host", None) or "unknown"
    if not trusted.trusts(peer):
        return peer
    hops: list[str] = []
    # bytes, not str: a str name makes Twisted decode UTF-8 and raise on anything else
    for raw in request.requestHeaders.getRawHeaders(b"X-Forwarded-For", []):
        value = raw.decode("latin-1")
        hops.extend(part.strip() for part in value.split(",") if part.strip())
    client = peer
    for hop in reversed(hops):
        if ip_address_of(hop) is None:
            break
        client = hop
        if not trusted.trusts(hop):
            break
    return client
