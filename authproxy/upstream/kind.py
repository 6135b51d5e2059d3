"""What a kind of upstream IdP brings to the registry: its fields, their rules, its factory.

Each type's module (oidc, oauth2, development) defines one ``UpstreamType``;
authproxy.upstream.registry lists them. The helpers below are the rules that several
types share, worded as the configuration error lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from authproxy.config import UpstreamConfig, check_idp_url

if TYPE_CHECKING:
    from authproxy.config import Config
    from authproxy.storage.sessions import IUpstreamSessions
    from authproxy.upstream.interface import IUpstreamProvider
    from authproxy.upstream.reachability import ReachabilityProbe

#: ``build(config, sessions, reactor, http, reachability)``: ``http`` is a treq client, or None
#: for the default; ``reachability`` probes the IdP before login redirects, None for no probe.
Build = Callable[
    ["Config", "IUpstreamSessions", Any, Any, "ReachabilityProbe | None"], "IUpstreamProvider"
]


@attrs.frozen
class UpstreamType:
    """One kind of upstream IdP, as ``[upstream].type`` names it."""

    name: str
    #: The type-specific ``[upstream]`` fields this type takes; the other types refuse them.
    fields: tuple[str, ...]
    #: The problems with this type's fields, one error line each ([] when it is usable).
    config_problems: Callable[[Config], list[str]]
    #: The provider for a validated configuration.
    build: Build


def required_urls(upstream: UpstreamConfig, *fields: str) -> list[str]:
    """A line for each of ``fields`` that is missing or not an IdP URL (``check_idp_url``)."""
    problems = []
    for field in fields:
        value = getattr(upstream, field)
        if not value:
            problems.append(f'upstream.{field}: is required for type "{upstream.type}"')
        elif (why := check_idp_url(value)) is not None:
            problems.append(f"upstream.{field}: {why}")
    return problems


def optional_urls(upstream: UpstreamConfig, *fields: str) -> list[str]:
    """A line for each of ``fields`` that is set but not an IdP URL (``check_idp_url``)."""
    return [
        f"upstream.{field}: {why}"
        for field in fields
        if (value := getattr(upstream, field)) is not None
        and (why := check_idp_url(value)) is not None
    ]


def required_client_id(upstream: UpstreamConfig) -> list[str]:
    """The IdP knows authproxy by its client_id: a code-flow type needs one."""
    if upstream.client_id:
        return []
    return [f'upstream.client_id: is required for type "{upstream.type}"']
