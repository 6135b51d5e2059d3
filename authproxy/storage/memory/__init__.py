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

from twisted.internet.interfaces import IReactorTime

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


def memory_storage(
    clock: IReactorTime,
    *,
    max_clients: int = 10000,
    unused_client_ttl: float | None = 30 * 86400,
    max_pending: int = 10000,
    max_codes: int = 10000,
    max_refresh_tokens: int = 100000,
    max_families: int = 100000,
    max_upstream_sessions: int = 100000,
    max_users: int = 100000,
    max_revoked_jtis: int = 100000,
    revoked_jti_leeway: float = 60.0,
    max_rate_keys: int = 40000,
) -> Storage:
    """A Storage in process memory, expiring by ``clock`` and bounded on every collection.

    Expired records are invisible at once and removed by ``upkeep.sweep()`` (run it
    periodically with :class:`authproxy.storage.sweeper.StorageSweeper`).
    ``unused_client_ttl`` None keeps clients forever. ``max_rate_keys`` bounds the rate
    buckets of every limiter together (four limiters of 10000 keys each).
    """
    ledger = CapLedger(clock)
    clients = MemoryClients(ledger, max_clients, unused_client_ttl)
    logins = MemoryLogins(ledger, max_pending)
    codes = MemoryAuthorizationCodes(ledger, max_codes)
    revocations = MemoryRevocations(ledger, max_revoked_jtis, revoked_jti_leeway)
    families = MemoryTokenFamilies(
        ledger, revocations, max_refresh_tokens=max_refresh_tokens, max_families=max_families
    )
    return Storage(
        clock=clock,
        clients=clients,
        logins=logins,
        codes=codes,
        families=families,
        upstream_sessions=MemoryUpstreamSessions(ledger, max_upstream_sessions),
        revocations=revocations,
        rate_counters=MemoryRateCounters(clock, max_rate_keys),
        users=MemoryUsers(ledger, max_users),
        upkeep=ledger,
    )
