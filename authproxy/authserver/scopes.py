"""OAuth scope strings (RFC 6749 §3.3), and which scopes clients get.

Scopes come in three kinds here:

- the *initial* scopes: what a client should ask for when it first signs in (the guard's
  401 challenge names them): every supported scope except ``offline_access`` (a request for
  a refresh token, which clients add themselves) and the step-up scopes;
- the *step-up* scopes: named by a ``[[proxy.scope_rules]]`` rule and not required of every
  request; a client asks for them when an operation answers 403 ``insufficient_scope``;
- the *default* scopes a registered client gets when it names none: every supported scope
  except the step-up ones. Registration never grants a step-up scope by default.

At ``/oauth/authorize`` a client may ask for its registered scopes and for the step-up
scopes: MCP clients step up with the client_id they registered when they first signed in
(the MCP SDKs do not re-register), and the consent page shows the new scopes to the user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from authproxy.config import Config

# Never advertised nor challenged for: a request for a refresh token, not for access.
REFRESH_SCOPE = "offline_access"


def split_scope(value: str) -> tuple[str, ...]:
    """A scope string as a de-duplicated tuple, order kept."""
    return tuple(dict.fromkeys(value.split()))


def union(*scope_lists: Iterable[str]) -> tuple[str, ...]:
    """The scopes of every list, each once, in order of first appearance."""
    return tuple(dict.fromkeys(s for scopes in scope_lists for s in scopes))


def step_up_scopes(config: Config) -> frozenset[str]:
    """Scopes only some operations need: named by a scope rule, not required of every request."""
    required = set(config.auth_server.required_scopes)
    return frozenset(
        s for rule in config.proxy.scope_rules for s in rule.scopes if s not in required
    )


def initial_scopes(config: Config) -> tuple[str, ...]:
    """What a client should ask for when it first signs in (the 401 challenge's ``scope``)."""
    step_up = step_up_scopes(config)
    return tuple(
        s for s in config.auth_server.scopes_supported if s not in step_up and s != REFRESH_SCOPE
    )


@attrs.frozen
class ClientScopes:
    """Which scopes a client registers, gets by default, and may ask for when authorizing."""

    supported: tuple[str, ...]
    default: tuple[str, ...]
    step_up: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config: Config) -> ClientScopes:
        supported = config.auth_server.scopes_supported
        step_up = step_up_scopes(config)
        return cls(supported, tuple(s for s in supported if s not in step_up), step_up)

    @classmethod
    def of(cls, scopes: ClientScopes | Sequence[str]) -> ClientScopes:
        """``scopes`` itself, or a plain list of supported scopes (all of them the default)."""
        if isinstance(scopes, ClientScopes):
            return scopes
        return cls(tuple(scopes), tuple(scopes))

    def registered(self, requested: str | None) -> tuple[str, ...]:
        """The scopes a client registers with (RFC 7591 §2 ``scope``): those it asked for that
        this server supports, or the default set when it asked for none of them."""
        asked = [s for s in split_scope(requested or "") if s in self.supported]
        return tuple(asked) or self.default

    def authorizable(self, registered: Sequence[str]) -> tuple[str, ...]:
        """What a client registered with ``registered`` may ask for at /oauth/authorize."""
        return union(
            (s for s in registered if s in self.supported),
            (s for s in self.supported if s in self.step_up),
        )
