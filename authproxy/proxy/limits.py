"""Caps on the backend connections open at once: in total and per grant.

Every proxied request holds one backend connection until its response ended (an SSE stream
holds it for as long as it stays open), so counting requests in flight counts connections.
The per-grant cap counts by (subject, client_id): all the tokens one user's authorization of
one client produced, refreshed ones included. Per token (jti) would let a client escape the
cap by refreshing; per user would let one of a user's MCP clients starve the others. An MCP
client holds one or two connections (its POSTs and one GET stream), so a grant that reaches
the cap is a runaway or hostile client, and the total cap keeps the backend's and authproxy's
file descriptors for everyone else.
"""

from __future__ import annotations

from authproxy.http.held_counts import HeldCounts
from authproxy.proxy.sessions import Owner


class BackendConnectionLimits:
    """Counters of backend connections in use; ``acquire`` / ``release`` around each request."""

    def __init__(self, total: int, per_grant: int) -> None:
        self.max_total = total
        self.max_per_grant = per_grant
        self._counts: HeldCounts[Owner] = HeldCounts()

    @property
    def in_use(self) -> int:
        return self._counts.total

    def acquire(self, grant: Owner) -> str | None:
        """Take a connection for ``grant``; None on success, else which cap refused it
        (``"total"`` or ``"grant"``)."""
        if self._counts.held(grant) >= self.max_per_grant:
            return "grant"
        if self._counts.total >= self.max_total:
            return "total"
        self._counts.take(grant)
        return None

    def release(self, grant: Owner) -> None:
        self._counts.give_back(grant)
