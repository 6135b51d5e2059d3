"""Every path of the authorization server, ready to mount in the root prefix table."""

from __future__ import annotations

from twisted.web.resource import IResource

from authproxy.authserver.authorize import AuthorizeResource
from authproxy.authserver.callback import CallbackResource
from authproxy.authserver.cimd.cache import ClientDocuments, client_documents
from authproxy.authserver.clients import ClientResolver
from authproxy.authserver.consent import ConsentResource, ConsentStep
from authproxy.authserver.login_binding import LoginBinding
from authproxy.authserver.metadata import (
    AUTHORIZE_PATH,
    CALLBACK_PATH,
    CONSENT_PATH,
    REGISTER_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    USERINFO_PATH,
    is_openid_provider,
    metadata_routes,
)
from authproxy.authserver.ratelimit import ClientRequestLimits, TokenBucketLimiter
from authproxy.authserver.register import RegistrationResource
from authproxy.authserver.revoke import RevocationResource
from authproxy.authserver.scopes import ClientScopes
from authproxy.authserver.token import TokenResource, TokenSettings
from authproxy.authserver.userinfo import UserinfoResource
from authproxy.config import Config
from authproxy.http.responses import TrustedProxies
from authproxy.keys.ring import KeyRing
from authproxy.ops.metrics import EventCounters
from authproxy.proxy.guard import BearerGuard
from authproxy.storage import Storage
from authproxy.tokens import AccessTokenIssuer, AccessTokenVerifier, Clock, OpaqueTokens
from authproxy.upstream.interface import IUpstreamProvider


def auth_routes(
    config: Config,
    ring: KeyRing,
    storage: Storage,
    provider: IUpstreamProvider,
    clock: Clock,
    documents: ClientDocuments | None = None,
    events: EventCounters | None = None,
) -> dict[str, IResource]:
    """Path -> Resource for metadata, registration, authorize, consent, callback, token, revoke,
    and userinfo when authproxy is an OpenID provider (``openid`` among the served scopes).

    With ``auth_server.consent = "skip"`` there is no consent step (and no consent path).

    Also includes the provider's own routes (the development login page). The JWKS is not
    here: it is mounted from ``authproxy.authserver.jwks``.

    Client ID metadata documents, when enabled, are fetched by ``documents`` (by default
    over the network of ``clock``, which must then be the reactor).
    """
    auth = config.auth_server
    events = events or EventCounters()
    issuer = AccessTokenIssuer(ring=ring, clock=clock, issuer=auth.issuer)
    opaque = OpaqueTokens(ring=ring)
    cimd = auth.client_metadata_documents
    client_scopes = ClientScopes.from_config(config)
    if cimd.enabled and documents is None:
        documents = client_documents(cimd, clock, client_scopes, events)
    clients = ClientResolver(storage.clients, documents if cimd.enabled else None)
    counters = storage.rate_counters
    registration = auth.registration
    limiter = TokenBucketLimiter(
        counters, registration.rate.events, registration.rate.period, "registration", events
    )
    routes: dict[str, IResource] = dict(metadata_routes(config, ring))
    routes[REGISTER_PATH] = RegistrationResource(
        storage.clients,
        clock,
        client_scopes,
        limiter,
        trusted_proxies=config.server.trusted_proxies,
        enabled=registration.enabled,
        events=events,
    )
    consent = auth.consent != "skip"
    binding = LoginBinding.for_public_url(config.server.public_url, ring)
    authorize = AuthorizeResource(
        storage=storage,
        provider=provider,
        clock=clock,
        issuer=auth.issuer,
        allowed_audiences=auth.allowed_audiences,
        scopes_supported=client_scopes,
        binding=binding,
        consent=ConsentStep(config, storage.logins, ring, clock) if consent else None,
        limiter=TokenBucketLimiter(
            counters, auth.authorize_rate.events, auth.authorize_rate.period, "authorize", events
        ),
        trusted_proxies=config.server.trusted_proxies,
        clients=clients,
    )
    routes[AUTHORIZE_PATH] = authorize
    if consent:
        routes[CONSENT_PATH] = ConsentResource(
            config, storage.logins, ring, clock, continue_to_upstream=authorize.redirect_to_upstream
        )
    routes[CALLBACK_PATH] = CallbackResource(
        storage=storage,
        provider=provider,
        clock=clock,
        opaque=opaque,
        issuer=auth.issuer,
        auth_code_lifespan=auth.auth_code_lifespan,
        binding=binding,
        require_consent=consent,
        events=events,
    )
    limits = ClientRequestLimits(
        per_client=TokenBucketLimiter(
            counters, auth.token_rate.events, auth.token_rate.period, "token-client", events
        ),
        per_source=TokenBucketLimiter(
            counters,
            auth.token_source_rate.events,
            auth.token_source_rate.period,
            "token-source",
            events,
        ),
        trusted=TrustedProxies.from_cidrs(config.server.trusted_proxies),
    )
    routes[TOKEN_PATH] = TokenResource(
        storage=storage,
        provider=provider,
        clock=clock,
        issuer=issuer,
        opaque=opaque,
        settings=TokenSettings(
            access_token_lifespan=auth.access_token_lifespan,
            refresh_token_lifespan=auth.refresh_token_lifespan,
            refresh_reuse_grace=auth.refresh_reuse_grace,
            allowed_audiences=auth.allowed_audiences,
        ),
        limits=limits,
        clients=clients,
        events=events,
    )
    routes[REVOKE_PATH] = RevocationResource(
        storage=storage,
        provider=provider,
        verifier=AccessTokenVerifier(ring, auth.issuer),
        opaque=opaque,
        limits=limits,
        clients=clients,
        events=events,
    )
    if is_openid_provider(config):
        guard = BearerGuard(
            ring=ring,
            revocations=storage.revocations,
            clock=clock,  # type: ignore[arg-type]  # the guard reads only seconds()
            issuer=auth.issuer,
            audiences=auth.allowed_audiences,  # every token authproxy issues (userinfo.py)
        )
        routes[USERINFO_PATH] = UserinfoResource(guard, realm=auth.issuer)
    for path, resource in provider.routes().items():
        if path in routes:
            raise ValueError(f"the upstream provider's route {path} clashes with the auth server")
        routes[path] = resource
    return routes
