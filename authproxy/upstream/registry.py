"""The upstream identity provider client: pick and build the configured IUpstreamProvider.

- ``oidc``: discovery, code exchange, id_token verification (authproxy.upstream.oidc);
- ``oauth2``: explicit endpoints, identity from userinfo (authproxy.upstream.oauth2);
- ``development``: the built-in login page, loopback only (authproxy.upstream.development).

Every provider has ``services()`` (attach them to the application: OIDC discovery runs as a
Service) and ``readiness() -> (ok, detail)`` for ``/ready``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService

from authproxy.config import Config, ConfigError, development_listen_problems
from authproxy.storage.sessions import IUpstreamSessions
from authproxy.upstream.development import DevelopmentProvider
from authproxy.upstream.http import IdPHTTP, default_idp_http
from authproxy.upstream.interface import IUpstreamProvider
from authproxy.upstream.oauth2 import OAuth2Provider
from authproxy.upstream.oidc import OIDCProvider

__all__ = [
    "DevelopmentProvider",
    "OAuth2Provider",
    "OIDCProvider",
    "make_upstream_provider",
    "upstream_services",
]


def upstream_services(provider: IUpstreamProvider) -> list[IService]:
    """The Services ``provider`` needs running (OIDC discovery, the HTTP pool's closer)."""
    services = getattr(provider, "services", None)
    return list(services()) if services is not None else []


def make_upstream_provider(
    config: Config, sessions: IUpstreamSessions, reactor: Any, http: Any = None
) -> IUpstreamProvider:
    """The provider for ``config.upstream.type``.

    ``http`` is a treq ``HTTPClient`` (or ``StubTreq``); by default treq over a persistent
    connection pool with Twisted's verifying TLS policy. Every request to the IdP is bounded
    by ``upstream.timeout``. Raises ConfigError when the development provider is configured
    on a non-loopback listen address.
    """
    upstream = config.upstream
    if upstream.type == "development":
        # Validation refuses this already; a Config built in code is checked here too.
        problems = development_listen_problems(config.server.listen)
        if problems:
            raise ConfigError(problems)
        return DevelopmentProvider(config, sessions, reactor)
    idp_http = (
        default_idp_http(reactor, upstream.timeout)
        if http is None
        else IdPHTTP(http, reactor, upstream.timeout)
    )
    if upstream.type == "oidc":
        return OIDCProvider(config, sessions, reactor, idp_http)
    if upstream.type == "oauth2":
        return OAuth2Provider(config, sessions, reactor, idp_http)
    raise ConfigError([f'upstream.type: "{upstream.type}" is not oidc, oauth2 or development'])
