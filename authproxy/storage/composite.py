"""Storage: one implementation of each storage concern, what the application wires.

Callers take the one concern they use (``IClients``, ``IRevocations``...); only wiring and
the endpoints that span several concerns (the token endpoint) hold the whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
from twisted.internet.defer import Deferred

from authproxy.storage.clients import IClients
from authproxy.storage.codes import IAuthorizationCodes
from authproxy.storage.families import ITokenFamilies
from authproxy.storage.logins import ILogins
from authproxy.storage.rates import IRateCounters
from authproxy.storage.revocations import IRevocations
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.storage.users import IUsers


class StorageUpkeep(Protocol):
    """The housekeeping of a storage as a whole: expiry sweeps and figures for metrics."""

    def sweep(self) -> Deferred[int]:
        """Remove expired records; fires with how many were removed (0 when the store
        expires them itself)."""

    def record_counts(self) -> dict[str, int]:
        """How many records each collection holds."""

    def refusals(self) -> dict[str, int]:
        """How many requests each collection refused at its cap since start (a counter)."""


@attrs.frozen
class Storage:
    """Everything the authorization server, upstream federation and guard persist, by concern.

    Every method of every concern returns a Deferred so that a networked backend (Redis) can
    implement it. Implementations copy values in and out: callers never share state. Expired
    records are invisible (``get`` answers None) even before a sweep removes them.
    """

    clock: Any  # IReactorTime: the time expiry is measured by
    clients: IClients
    logins: ILogins
    codes: IAuthorizationCodes
    families: ITokenFamilies
    upstream_sessions: IUpstreamSessions
    revocations: IRevocations
    rate_counters: IRateCounters
    users: IUsers
    upkeep: StorageUpkeep
    #: Long-lived parts the application starts and stops with itself (a networked store's
    #: connection, its revocation feed); none for memory.
    services: tuple[Any, ...] = ()
    #: The ``/ready`` check of a networked store: (connected?, detail); None for memory.
    readiness: Callable[[], tuple[bool, str]] | None = None
