"""In-process, bounded, expiring storage: one class per concern over a shared CapLedger.

Every collection is a dict (O(1) lookups) beside a heap ordered by expiry, so that sweeping
and evicting at a cap cost O(log n). Everything is lost on restart.

What happens when a collection reaches its cap (expired entries always go first): an *owner*
is the source address (its rate-limit key) for records that unauthenticated requests create,
the client for refresh tokens and families, the user for codes and upstream sessions; at a
cap the owner holding the most entries loses its oldest, the newcomer's own whenever it
holds as many as anyone (:class:`authproxy.storage.fairness.OwnerIndex`), so a flood
replaces its own. Each class says what it never evicts.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from authproxy.storage.capacity import StorageCaps
from authproxy.storage.composite import Storage
from authproxy.storage.memory.clients import MemoryClients
from authproxy.storage.memory.codes import MemoryAuthorizationCodes
from authproxy.storage.memory.families import MemoryTokenFamilies
from authproxy.storage.memory.ledger import CapLedger
from authproxy.storage.memory.logins import MemoryLogins
from authproxy.storage.memory.rates import MemoryRateCounters
from authproxy.storage.memory.revocations import MemoryRevocations
from authproxy.storage.memory.sessions import MemoryUpstreamSessions
from authproxy.storage.memory.users import MemoryUsers

__all__ = [
    "CapLedger",
    "MemoryAuthorizationCodes",
    "MemoryClients",
    "MemoryLogins",
    "MemoryRateCounters",
    "MemoryRevocations",
    "MemoryTokenFamilies",
    "MemoryUpstreamSessions",
    "MemoryUsers",
    "memory_storage",
]


def memory_storage(clock: IReactorTime, **caps: Any) -> Storage:
    """A Storage in process memory, expiring by ``clock`` and bounded on every collection by
    ``caps`` (the keywords of :class:`~authproxy.storage.capacity.StorageCaps`).

    Expired records are invisible at once and removed by ``upkeep.sweep()`` (run it
    periodically with :class:`authproxy.storage.sweeper.StorageSweeper`).
    """
    limits = StorageCaps(**caps)
    ledger = CapLedger(clock)
    clients = MemoryClients(ledger, limits.max_clients, limits.unused_client_ttl)
    logins = MemoryLogins(ledger, limits.max_pending)
    codes = MemoryAuthorizationCodes(ledger, limits.max_codes)
    revocations = MemoryRevocations(ledger, limits.max_revoked_jtis, limits.revoked_jti_leeway)
    families = MemoryTokenFamilies(
        ledger,
        revocations,
        max_refresh_tokens=limits.max_refresh_tokens,
        max_families=limits.max_families,
    )
    return Storage(
        clock=clock,
        clients=clients,
        logins=logins,
        codes=codes,
        families=families,
        upstream_sessions=MemoryUpstreamSessions(ledger, limits.max_upstream_sessions),
        revocations=revocations,
        rate_counters=MemoryRateCounters(clock, limits.max_rate_keys),
        users=MemoryUsers(ledger, limits.max_users),
        upkeep=ledger,
    )
