"""MemoryUsers: upstream identities to user ids in process memory."""

from __future__ import annotations

import secrets
from collections import OrderedDict

from twisted.internet import defer
from twisted.internet.defer import Deferred
from zope.interface import implementer

from authproxy.storage.memory.ledger import CapLedger
from authproxy.storage.users import IUsers


@implementer(IUsers)
class MemoryUsers:
    """At the cap, the least recently seen upstream identity is forgotten (its next login
    gets a new user id); refusing logins instead would lock everyone out for good."""

    def __init__(self, ledger: CapLedger, cap: int) -> None:
        self._ledger = ledger
        self._cap = cap
        # (upstream_name, subject) -> user id, least recently seen first
        self._users: OrderedDict[tuple[str, str], str] = OrderedDict()
        ledger.register("users", cap, self._users, None)

    def user_id_for(self, upstream_name: str, upstream_subject: str) -> Deferred[str]:
        """The stable internal user id for an upstream identity, created on first sight."""
        key = (upstream_name, upstream_subject)
        user_id = self._users.get(key)
        if user_id is not None:
            self._users.move_to_end(key)
            return defer.succeed(user_id)
        if len(self._users) >= self._cap:
            self._users.popitem(last=False)
            self._ledger.count_eviction("users")
        user_id = secrets.token_urlsafe(16)
        self._users[key] = user_id
        return defer.succeed(user_id)
