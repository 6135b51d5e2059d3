"""A per-key token bucket on the injected clock, and the request's source address.

Used by dynamic client registration and authorize (open endpoints that create server-side
state must not let one address fill a table: clients, logins in progress), and by the token
and revocation endpoints (per client and per source address).

Every limit counts a source by :func:`source_key`: an IPv6 host usually owns a whole /64,
so counting exact IPv6 addresses would give one attacker 2^64 fresh buckets.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.http.errors import OAuthError
from authproxy.http.responses import TrustedProxies, source_key
from authproxy.tokens import Clock

_log = Logger()


class TokenBucketLimiter:
    """``rate_count`` events per ``rate_period`` seconds per key, with bursts up to ``rate_count``.

    At most ``max_keys`` buckets are kept (least recently used dropped first), so a flood of
    source addresses costs bounded memory; a dropped bucket starts full again, which only
    helps an attacker who already controls more addresses than the cap.
    """

    def __init__(
        self, clock: Clock, rate_count: int, rate_period: float, max_keys: int = 10000
    ) -> None:
        if rate_count < 1 or rate_period <= 0:
            raise ValueError("rate_count must be >= 1 and rate_period > 0")
        self._clock = clock
        self._capacity = float(rate_count)
        self._per_second = rate_count / rate_period
        self._max_keys = max_keys
        # key -> (tokens, last refill time)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def acquire(self, key: str) -> float:
        """Take one token for ``key``: 0 when allowed, else the seconds until one is available."""
        now = self._clock.seconds()
        tokens, last = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + max(0.0, now - last) * self._per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self._per_second
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> str:
        """A Retry-After header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))

    def refuse(self, address: str, action: str) -> str | None:
        """Count one ``action`` ("Registration") from the source ``address`` (by its
        :func:`source_key`).

        None when it is allowed; else it is logged and the Retry-After value is returned for
        the endpoint's own refusal (an OAuth error, an HTML page).
        """
        wait = self.acquire(source_key(address))
        if wait <= 0:
            return None
        _log.warn("{action} rate limit hit by {address}", action=action, address=address)
        return self.retry_after(wait)

    def refuse_client(self, client_id: str, action: str) -> str | None:
        """Like :meth:`refuse`, counting by client rather than by source address."""
        wait = self.acquire(client_id)
        if wait <= 0:
            return None
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

    def check_source(self, request: Request, action: str) -> None:
        """Raise a 429 OAuthError when the request's source is over its rate."""
        address = source_address(request, self.trusted)
        retry_after = self.per_source.refuse(address, action)
        if retry_after is not None:
            raise self._too_many(retry_after, "address")

    def check_client(self, client_id: str, action: str) -> None:
        """Raise a 429 OAuthError when the (authenticated) client is over its rate."""
        retry_after = self.per_client.refuse_client(client_id, action)
        if retry_after is not None:
            raise self._too_many(retry_after, "client")


def source_address(request: Request, trusted: TrustedProxies) -> str:
    """The client's address: the peer, or from X-Forwarded-For when the peer is a trusted proxy.

    The header is read right to left, skipping trusted proxies, so a client cannot choose the
    address it is counted under by sending its own X-Forwarded-For.
    """
    peer = getattr(request.getClientAddress(), "host", None) or "unknown"
    if not trusted.trusts(peer):
        return peer
    hops: list[str] = []
    # bytes, not str: a str name makes Twisted decode UTF-8 and raise on anything else
    for raw in request.requestHeaders.getRawHeaders(b"X-Forwarded-For", []):
        value = raw.decode("latin-1")
        hops.extend(part.strip() for part in value.split(",") if part.strip())
    for hop in reversed(hops):
        if not trusted.trusts(hop):
            return hop
    return hops[0] if hops else peer
