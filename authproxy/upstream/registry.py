"""The upstream type registry: which kinds of IdP authproxy can log users in with.

- ``oidc``: discovery, code exchange, id_token verification (authproxy.upstream.oidc);
- ``oauth2``: explicit endpoints, identity from userinfo (authproxy.upstream.oauth2);
- ``development``: the built-in login page, loopback only (authproxy.upstream.development).

Each entry (an ``UpstreamType``) owns its ``[upstream]`` fields' rules, which configuration
validation asks for, and the construction of its provider. Adding a type is one module
defining an ``UpstreamType`` and one line in ``UPSTREAM_TYPES``.

Every provider has ``services()`` (attach them to the application: OIDC discovery runs as a
Service) and ``readiness() -> (ok, detail)`` for ``/ready``.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.application.service import IService

from authproxy.config import Config, ConfigError, UpstreamConfig, alternatives
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.upstream import development, oauth2, oidc
from authproxy.upstream.development import DevelopmentProvider
from authproxy.upstream.interface import IUpstreamProvider
from authproxy.upstream.kind import UpstreamType
from authproxy.upstream.oauth2 import OAuth2Provider
from authproxy.upstream.oidc import OIDCProvider
from authproxy.upstream.reachability import ReachabilityProbe

__all__ = [
    "UPSTREAM_TYPES",
    "DevelopmentProvider",
    "OAuth2Provider",
    "OIDCProvider",
    "UpstreamTypes",
    "make_upstream_provider",
    "upstream_services",
]


@attrs.frozen
class UpstreamTypes:
    """The registered upstream types, in the order the error lines list them."""

    types: tuple[UpstreamType, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(kind.name for kind in self.types)

    def get(self, name: str) -> UpstreamType | None:
        """The type registered as ``name``, or None."""
        return next((kind for kind in self.types if kind.name == name), None)

    def config_problems(self, config: Config) -> list[str]:
        """Every problem with ``config.upstream`` for its type, one error line each."""
        upstream = config.upstream
        kind = self.get(upstream.type)
        if kind is None:
            return [self._unknown(upstream.type)]
        return [*self._refused_fields(upstream, kind), *kind.config_problems(config)]

    def _refused_fields(self, upstream: UpstreamConfig, kind: UpstreamType) -> list[str]:
        """A line for each field of another type that is set: it would be silently ignored."""
        others = {field for other in self.types for field in other.fields} - set(kind.fields)
        return [
            f'upstream.{field.name}: does not apply to type "{kind.name}"'
            for field in attrs.fields(UpstreamConfig)
            if field.name in others and getattr(upstream, field.name) is not None
        ]

    def build(
        self,
        config: Config,
        sessions: IUpstreamSessions,
        reactor: Any,
        http: Any = None,
        reachability: ReachabilityProbe | None = None,
    ) -> IUpstreamProvider:
        """The provider for ``config.upstream.type`` (validated, so registered).

        ``http`` is a treq ``HTTPClient`` (or ``StubTreq``); by default treq over a persistent
        connection pool with Twisted's verifying TLS policy. Every request to the IdP is
        bounded by ``upstream.timeout``. ``reachability`` probes the IdP before each login
        redirect (None: no probe). Raises ConfigError for an unregistered type, and when the
        development provider is configured on a non-loopback listen address.
        """
        kind = self.get(config.upstream.type)
        if kind is None:  # a Config built in code, not validated
            raise ConfigError([self._unknown(config.upstream.type)])
        return kind.build(config, sessions, reactor, http, reachability)

    def _unknown(self, name: str) -> str:
        return f'upstream.type: "{name}" is not {alternatives(self.names)}'


UPSTREAM_TYPES = UpstreamTypes((oidc.OIDC, oauth2.OAUTH2, development.DEVELOPMENT))

#: The provider for ``config.upstream.type``: ``UpstreamTypes.build`` of the registered types.
make_upstream_provider = UPSTREAM_TYPES.build


def upstream_services(provider: IUpstreamProvider) -> list[IService]:
    """The Services ``provider`` needs running (OIDC discovery, the HTTP pool's closer)."""
    services = getattr(provider, "services", None)
    return list(services()) if services is not None else []
