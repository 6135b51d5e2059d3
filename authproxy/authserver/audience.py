"""Resource indicators (RFC 8707): which audience an access token is for.

One rule for the two endpoints that take a ``resource`` parameter. The authorization
request may name one of the served audiences; with none named and exactly one served, that
one is meant, and with several the choice waits for the token request. The token request
may name one too, but not another than the one authorized; the resulting audience must
still be served (the operator may have removed it since the login).

A requested resource matches a served one after normalising what URLs leave free (as the
MCP 2026-07-28 revision asks): the scheme and host compare case-insensitively and a default
port (``:443`` for https, ``:80`` for http) equals none. The path, query and everything
else compare exactly. The audience granted is always the configured spelling.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"https": 443, "http": 80}


class InvalidTarget(Exception):
    """The request's resource cannot be served (``invalid_target``); ``str()`` says why."""


def canonical_resource(resource: str) -> str:
    """``resource`` with its scheme and host lower-cased and a default port dropped.

    A value that is not an absolute URL is returned unchanged (it then matches nothing
    served, and the caller says so).
    """
    try:
        parts = urlsplit(resource)
        port = parts.port
    except ValueError:
        return resource
    host = parts.hostname
    if not parts.scheme or host is None:
        return resource
    scheme = parts.scheme.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None or _DEFAULT_PORTS.get(scheme) == port else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rpartition("@")[0] + "@" + netloc
    return parts._replace(scheme=scheme, netloc=netloc).geturl()


class ResourceIndicators:
    """The audiences this server issues tokens for, and the rule choosing one of them."""

    def __init__(self, audiences: Sequence[str]) -> None:
        self.audiences = tuple(audiences)
        # the canonical form of each served audience -> its configured spelling
        self._canonical = {canonical_resource(a): a for a in reversed(self.audiences)}

    def _served(self, resource: str) -> str:
        served = self._canonical.get(canonical_resource(resource))
        if served is None:
            raise InvalidTarget("the requested resource is not served by this server")
        return served

    def at_authorization(self, requested: str | None) -> str:
        """The resource an authorization request is for ("" when the token request decides)."""
        if requested is not None:
            return self._served(requested)
        return self.audiences[0] if len(self.audiences) == 1 else ""

    def at_token(self, requested: str | None, granted: str) -> str:
        """The audience of an access token for ``granted`` (the authorized resource or "")."""
        if requested is not None:
            served = self._served(requested)
            if granted and served != granted:
                raise InvalidTarget("the requested resource is not the one authorized")
            return served
        if granted:
            if granted not in self.audiences:
                raise InvalidTarget("the authorized resource is no longer served")
            return granted
        if len(self.audiences) == 1:
            return self.audiences[0]
        raise InvalidTarget("resource is required: this server has several")
