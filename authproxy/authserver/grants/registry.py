"""The grant registry: which grant types this server supports, and who handles each.

Like authlib's and fosite's grant handlers: each grant type is one class, registered once.
The token endpoint asks the registry which grant handles a ``grant_type``; client
registration and the authorization server metadata read the supported list from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol

from authproxy.authserver.grants.issuance import TokenIssuance
from authproxy.storage.models import RegisteredClient


class Grant(Protocol):
    """One grant type's handler at the token endpoint."""

    grant_type: ClassVar[str]
    #: Whether a success starts a new token family (storage room is checked for one first).
    creates_family: ClassVar[bool]

    def __init__(self, tokens: TokenIssuance) -> None: ...

    async def exchange(self, client: RegisteredClient, params: dict[str, str]) -> dict[str, Any]:
        """The token response for this grant, or raise OAuthError."""
        ...


class GrantRegistry:
    """The grant types this server supports, in the order they are advertised."""

    def __init__(self, grants: Iterable[type[Grant]]) -> None:
        self._grants = {grant.grant_type: grant for grant in grants}

    @property
    def grant_types(self) -> tuple[str, ...]:
        """The supported ``grant_type`` values (for metadata and registration)."""
        return tuple(self._grants)

    def handlers(self, tokens: TokenIssuance) -> Mapping[str, Grant]:
        """``grant_type`` -> its handler, built once for the token endpoint."""
        return {name: grant(tokens) for name, grant in self._grants.items()}
