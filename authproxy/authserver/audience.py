"""Resource indicators (RFC 8707): which audience an access token is for.

One rule for the two endpoints that take a ``resource`` parameter. The authorization
request may name one of the served audiences; with none named and exactly one served, that
one is meant, and with several the choice waits for the token request. The token request
may name one too, but not another than the one authorized; the resulting audience must
still be served (the operator may have removed it since the login).
"""

from __future__ import annotations

from collections.abc import Sequence


class InvalidTarget(Exception):
    """The request's resource cannot be served (``invalid_target``); ``str()`` says why."""


class ResourceIndicators:
    """The audiences this server issues tokens for, and the rule choosing one of them."""

    def __init__(self, audiences: Sequence[str]) -> None:
        self.audiences = tuple(audiences)

    def _served(self, resource: str) -> str:
        if resource not in self.audiences:
            raise InvalidTarget("the requested resource is not served by this server")
        return resource

    def at_authorization(self, requested: str | None) -> str:
        """The resource an authorization request is for ("" when the token request decides)."""
        if requested is not None:
            return self._served(requested)
        return self.audiences[0] if len(self.audiences) == 1 else ""

    def at_token(self, requested: str | None, granted: str) -> str:
        """The audience of an access token for ``granted`` (the authorized resource or "")."""
        if requested is not None:
            self._served(requested)
            if granted and requested != granted:
                raise InvalidTarget("the requested resource is not the one authorized")
            return requested
        if granted:
            if granted not in self.audiences:
                raise InvalidTarget("the authorized resource is no longer served")
            return granted
        if len(self.audiences) == 1:
            return self.audiences[0]
        raise InvalidTarget("resource is required: this server has several")
