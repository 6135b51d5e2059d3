"""How many connections authproxy holds: in total, per source address, and a probe reserve.

Every open connection costs a file descriptor (and a proxied one a second, to the backend).
Without a cap, a flood of idle or slow connections exhausts the process's descriptors and
then even ``/health`` is refused by the kernel. ``ConnectionLimits`` counts connections as
they open and close:

- beyond ``max_total`` a new connection is refused (the channel writes a 503 and closes);
- the last ``reserve`` connections below ``max_total`` serve only ``/health`` and ``/ready``,
  so probes still answer while the cap is reached;
- one source may hold at most ``max_per_source``. A source is the TCP peer: an IPv4 address
  (IPv4-mapped IPv6 counts as its IPv4 address) or an IPv6 /64, since one host commonly owns
  a whole /64. Trusted proxies (``server.trusted_proxies``) are exempt: behind a load
  balancer all traffic arrives from a few addresses, and the balancer's own limits apply.
"""

from __future__ import annotations

import enum

from authproxy.http.held_counts import HeldCounts
from authproxy.http.responses import NO_TRUSTED_PROXIES, TrustedProxies, source_key

# Connections kept for /health and /ready once the rest are taken.
MAX_RESERVE = 16


class Admission(enum.Enum):
    SERVE = "serve"
    PROBES_ONLY = "probes-only"
    REFUSE = "refuse"


class ConnectionLimits:
    """Counts open connections; ``admit`` when one opens, ``release`` (its key) when it closes."""

    def __init__(
        self,
        max_total: int,
        max_per_source: int,
        trusted: TrustedProxies | None = None,
        reserve: int | None = None,
    ) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.reserve = min(MAX_RESERVE, max_total // 4) if reserve is None else reserve
        self._trusted = trusted or NO_TRUSTED_PROXIES
        self._counts: HeldCounts[str] = HeldCounts()
        self.refused = 0

    @property
    def total(self) -> int:
        return self._counts.total

    def admit(self, host: str | None) -> tuple[Admission, str | None]:
        """Whether a connection from ``host`` may open; the key to release it with."""
        if self.total >= self.max_total:
            self.refused += 1
            return Admission.REFUSE, None
        key = None
        if host is not None:
            key = source_key(host)
            # The peer itself, not its key: an IPv6 key names a /64 network, which no
            # address lookup trusts.
            if self._trusted.trusts(host):
                key = None
        if key is not None and self._counts.held(key) >= self.max_per_source:
            self.refused += 1
            return Admission.REFUSE, None
        self._counts.take(key)
        if self.total > self.max_total - self.reserve:
            return Admission.PROBES_ONLY, key
        return Admission.SERVE, key

    def release(self, key: str | None) -> None:
        """A connection that ``admit`` let in has closed."""
        self._counts.give_back(key)

    def held_by(self, host: str) -> int:
        return self._counts.held(source_key(host))
