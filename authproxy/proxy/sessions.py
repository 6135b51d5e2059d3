"""MCP sessions bound to the user and client that created them.

A streamable-HTTP backend names a session in the ``Mcp-Session-Id`` response header of
``initialize``; anyone presenting that id afterwards speaks in that session. authproxy binds
each id the backend hands out to the owner of the token that received it (subject and
client_id) and answers 404 to any request whose session id is not bound to its token's
owner: unknown, expired, ended, or someone else's look the same (MCP streamable HTTP: 404
means "no such session, initialize a new one"), so nobody learns that another user's
session exists. Ids unknown to authproxy (after a restart: the table lives in memory) are
refused too, rather than passed through: passing them would let a leaked id be used by
anyone after a restart, and spec-following clients re-initialize on 404.

Memory is bounded: a session expires after ``idle_timeout`` without a request (a request in
progress, such as an open SSE stream, keeps it alive), a DELETE that the backend accepts or
a backend 404 ends it, each owner holds at most ``max_per_owner`` sessions and the table at
most ``max_sessions``. At a cap the least recently used idle session (of that owner, then of
anyone) is forgotten; its client gets 404 on its next request and starts a new one.

``SessionBindings`` is the interface; ``MemorySessionBindings`` the in-process table. It is
synchronous because it is asked on every proxied request (a dict lookup); a shared
(Redis) implementation would return Deferreds, and its one caller, ``MCPProxy``, is an async
method that would await them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

Owner = tuple[str, str | None]  # (token subject, client_id)


class SessionBindings(Protocol):
    """Which owner each MCP session id belongs to."""

    def enter(self, session_id: bytes, owner: Owner) -> bool:
        """True when ``session_id`` is bound to ``owner``: a request may use it. The session
        then stays alive until the matching ``leave``."""

    def leave(self, session_id: bytes) -> None:
        """The request that ``enter``-ed ``session_id`` ended: its idle time starts now."""

    def bind(self, session_id: bytes, owner: Owner) -> bool:
        """Bind a session the backend just created to ``owner``; False when it is already
        bound to someone else (never rebound) or no room can be made."""

    def end(self, session_id: bytes) -> None:
        """Forget ``session_id`` (ended by DELETE, or unknown to the backend)."""


class _Binding:
    __slots__ = ("owner", "idle_since", "active")

    def __init__(self, owner: Owner, now: float) -> None:
        self.owner = owner
        self.idle_since = now
        self.active = 0  # requests in progress in this session


class MemorySessionBindings:
    """The in-memory ``SessionBindings`` (module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        *,
        idle_timeout: float,
        max_sessions: int,
        max_per_owner: int,
    ) -> None:
        self._clock = clock
        self._idle_timeout = idle_timeout
        self._max_sessions = max_sessions
        self._max_per_owner = max_per_owner
        # Least recently used first (order of the last enter, leave or bind).
        self._bindings: OrderedDict[bytes, _Binding] = OrderedDict()
        self._per_owner: dict[Owner, int] = {}

    def __len__(self) -> int:
        return len(self._bindings)

    def enter(self, session_id: bytes, owner: Owner) -> bool:
        binding = self._bindings.get(session_id)
        if binding is None or binding.owner != owner:
            return False
        if not binding.active and self._expired(binding, self._clock.seconds()):
            self._forget(session_id, binding)
            return False
        binding.active += 1
        self._bindings.move_to_end(session_id)
        return True

    def leave(self, session_id: bytes) -> None:
        binding = self._bindings.get(session_id)
        if binding is not None and binding.active:
            binding.active -= 1
            binding.idle_since = self._clock.seconds()
            self._bindings.move_to_end(session_id)

    def bind(self, session_id: bytes, owner: Owner) -> bool:
        binding = self._bindings.get(session_id)
        if binding is not None:
            if binding.owner != owner:
                return False
            binding.idle_since = self._clock.seconds()
            self._bindings.move_to_end(session_id)
            return True
        if self._per_owner.get(owner, 0) >= self._max_per_owner and not self._evict(owner):
            return False
        if len(self._bindings) >= self._max_sessions and not self._evict(None):
            return False
        self._bindings[session_id] = _Binding(owner, self._clock.seconds())
        self._per_owner[owner] = self._per_owner.get(owner, 0) + 1
        return True

    def end(self, session_id: bytes) -> None:
        binding = self._bindings.get(session_id)
        if binding is not None:
            self._forget(session_id, binding)

    # -- bookkeeping ----------------------------------------------------------------------------
    def _expired(self, binding: _Binding, now: float) -> bool:
        return binding.idle_since + self._idle_timeout <= now

    def _forget(self, session_id: bytes, binding: _Binding) -> None:
        del self._bindings[session_id]
        left = self._per_owner[binding.owner] - 1
        if left:
            self._per_owner[binding.owner] = left
        else:
            del self._per_owner[binding.owner]

    def _evict(self, owner: Owner | None) -> bool:
        """Forget the least recently used idle session (of ``owner`` when given); False when
        every candidate is in use."""
        for session_id, binding in self._bindings.items():
            if not binding.active and (owner is None or binding.owner == owner):
                self._forget(session_id, binding)
                return True
        return False
