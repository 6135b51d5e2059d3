"""OpenID Connect upstream: discovery (a Service with backoff) and id_token based identity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from authproxy.config import Config, UpstreamConfig
from authproxy.http.loopback import is_loopback_url
from authproxy.storage.models import PendingAuthorization
from authproxy.upstream.codeflow import CodeFlowProvider, Identity
from authproxy.upstream.http import IdPHTTP
from authproxy.upstream.idtoken import JWKSCache, verify_id_token
from authproxy.upstream.interface import IUpstreamProvider, UpstreamError, UpstreamUnavailable
from authproxy.upstream.kind import UpstreamType, optional_urls, required_client_id, required_urls
from authproxy.upstream.sessions import TokenResponse

#: id_token claims kept in the token session (the rest is not needed and may be large).
KEPT_CLAIMS = ("sub", "name", "email", "email_verified", "preferred_username", "groups")


@attrs.frozen
class ProviderMetadata:
    """The parts of the IdP's discovery document authproxy uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None = None
    revocation_endpoint: str | None = None
    iss_parameter_supported: bool = False


def parse_metadata(document: Mapping[str, Any], issuer_url: str) -> ProviderMetadata:
    """Check a discovery document against the configured issuer; ValueError says what is wrong."""
    issuer = document.get("issuer")
    if issuer != issuer_url:
        raise ValueError(f"the document's issuer {str(issuer)[:200]!r} is not {issuer_url!r}")
    allow_http = is_loopback_url(issuer_url)
    endpoints: dict[str, str | None] = {}
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "userinfo_endpoint",
        "revocation_endpoint",
    ):
        value = document.get(name)
        required = name in ("authorization_endpoint", "token_endpoint", "jwks_uri")
        if value is None and not required:
            endpoints[name] = None
            continue
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} is missing")
        parts = urlsplit(value)
        if not parts.hostname or parts.fragment:
            raise ValueError(f"{name} is not an absolute URL")
        if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
            raise ValueError(f"{name} must use https")
        endpoints[name] = value
    return ProviderMetadata(
        issuer=issuer_url,
        authorization_endpoint=cast(str, endpoints["authorization_endpoint"]),
        token_endpoint=cast(str, endpoints["token_endpoint"]),
        jwks_uri=cast(str, endpoints["jwks_uri"]),
        userinfo_endpoint=endpoints["userinfo_endpoint"],
        revocation_endpoint=endpoints["revocation_endpoint"],
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported")
        is True,
    )


@implementer(IService)
class OIDCDiscovery(Service):
    """Fetches the IdP's discovery document at start, then every ``refresh_interval``.

    A failed fetch is retried after 1, 2, 4 ... seconds (at most ``max_backoff``); the last
    good metadata keeps serving meanwhile. ``readiness()`` is False until the first success.
    """

    name = "upstream-oidc-discovery"
    log = Logger()

    def __init__(
        self,
        issuer_url: str,
        http: IdPHTTP,
        clock: IReactorTime,
        *,
        refresh_interval: float = 3600.0,
        min_backoff: float = 1.0,
        max_backoff: float = 300.0,
    ) -> None:
        self.issuer_url = issuer_url
        self.url = issuer_url.rstrip("/") + "/.well-known/openid-configuration"
        self._http = http
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.metadata: ProviderMetadata | None = None
        self.last_error: str | None = None
        self.failures = 0
        self._call: IDelayedCall | None = None
        self._inflight: Deferred[ProviderMetadata] | None = None

    def startService(self) -> None:
        super().startService()
        self._fetch()

    def stopService(self) -> None:
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._inflight is not None:
            self._inflight.cancel()

    def _fetch(self) -> None:
        self._call = None
        d = self._inflight = ensureDeferred(self._fetch_once())
        d.addCallbacks(self._succeeded, self._failed)

    async def _fetch_once(self) -> ProviderMetadata:
        response = await self._http.request(
            "GET", self.url, headers={"Accept": "application/json"}, endpoint="discovery"
        )
        if response.status != 200:
            raise UpstreamError(f"HTTP {response.status}")
        try:
            return parse_metadata(response.body, self.issuer_url)
        except ValueError as e:
            raise UpstreamError(str(e)) from None

    def _schedule(self, delay: float) -> None:
        if self.running:
            self._call = self._clock.callLater(delay, self._fetch)

    def _succeeded(self, metadata: ProviderMetadata) -> None:
        self._inflight = None
        if metadata != self.metadata:
            self.log.info(
                "Upstream OIDC metadata of {issuer} loaded from {url}",
                issuer=self.issuer_url,
                url=self.url,
            )
        self.metadata = metadata
        self.last_error = None
        self.failures = 0
        self._schedule(self._refresh_interval)

    def _failed(self, failure: Failure) -> None:
        self._inflight = None
        if not self.running:
            return  # stopped meanwhile: the in-flight fetch was cancelled
        self.failures += 1
        delay = min(self._max_backoff, self._min_backoff * 2 ** (self.failures - 1))
        if failure.check(UpstreamError):
            reason = str(failure.value)
        else:
            reason = getattr(failure.type, "__name__", "error")
            self.log.failure("Unexpected error in upstream OIDC discovery", failure)
        self.last_error = reason
        self.log.warn(
            "Upstream OIDC discovery at {url} failed ({reason}); retrying in {delay:g} s",
            url=self.url,
            reason=reason,
            delay=delay,
        )
        self._schedule(delay)

    def require(self) -> ProviderMetadata:
        """The metadata, or UpstreamUnavailable while it was never fetched."""
        if self.metadata is None:
            raise UpstreamUnavailable("the identity provider's metadata is not loaded yet", 5)
        return self.metadata

    def readiness(self) -> tuple[bool, str]:
        if self.metadata is not None:
            return True, f"upstream metadata from {self.issuer_url}"
        detail = f"upstream OIDC discovery at {self.url} has not succeeded"
        if self.last_error:
            detail += f": {self.last_error}"
        return False, detail


@implementer(IUpstreamProvider)
class OIDCProvider(CodeFlowProvider):
    """An OpenID Connect IdP found by discovery; the identity comes from the verified id_token.

    Attach ``services()`` to the application so that discovery runs.
    """

    uses_nonce = True

    def _configure(self, upstream: UpstreamConfig) -> None:
        self._subject_claim = upstream.subject_claim or "sub"
        assert upstream.issuer_url is not None
        self.discovery = OIDCDiscovery(upstream.issuer_url, self._http, self._clock)
        self.jwks = JWKSCache(self._http, self._clock, lambda: self.discovery.require().jwks_uri)

    def services(self) -> list[IService]:
        """Discovery, then the connection pool's closer."""
        return [self.discovery, *super().services()]

    def readiness(self) -> tuple[bool, str]:
        return self.discovery.readiness()

    def _authorization_endpoint(self) -> str:
        return self.discovery.require().authorization_endpoint

    def _token_endpoint(self) -> str:
        return self.discovery.require().token_endpoint

    def _revocation_endpoint(self) -> str | None:
        if self._configured_revocation is not None:
            return self._configured_revocation
        try:
            return self.discovery.require().revocation_endpoint
        except UpstreamError:
            return None  # not discovered (yet): nothing to revoke at

    def _check_callback(self, args: Mapping[str, str]) -> None:
        # RFC 9207 mix-up defence: an iss in the callback must be our IdP's
        iss = args.get("iss")
        metadata = self.discovery.require()
        if iss is None and metadata.iss_parameter_supported:
            raise UpstreamError("the callback lacks the iss the identity provider promised")
        if iss is not None and iss != metadata.issuer:
            raise UpstreamError("the callback came from another identity provider (iss)")

    async def _identify(self, tokens: TokenResponse, pending: PendingAuthorization) -> Identity:
        metadata = self.discovery.require()
        if tokens.id_token is None:
            raise UpstreamError("the identity provider returned no id_token")
        if not pending.upstream_nonce:
            raise UpstreamError("the login lost its nonce; start again")
        try:
            claims = await verify_id_token(
                tokens.id_token,
                keys=self.jwks,
                issuer=metadata.issuer,
                client_id=self._client_id,
                nonce=pending.upstream_nonce,
                now=self._now(),
            )
        except UpstreamUnavailable:
            raise
        except UpstreamError as e:
            self.log.warn(
                "Upstream {upstream} id_token rejected: {reason}", upstream=self.name, reason=str(e)
            )
            raise
        subject = claims.get(self._subject_claim)
        if isinstance(subject, int) and not isinstance(subject, bool):
            subject = str(subject)
        if not isinstance(subject, str) or not subject:
            self.log.warn(
                "Upstream {upstream} id_token lacks the subject claim {claim}",
                upstream=self.name,
                claim=self._subject_claim,
            )
            raise UpstreamError(
                f'the id_token has no "{self._subject_claim}" claim to name the user'
            )
        name = claims.get("name") or claims.get("preferred_username")
        email = claims.get("email")
        return Identity(
            subject=subject,
            name=name if isinstance(name, str) else None,
            email=email if isinstance(email, str) else None,
            claims={k: claims[k] for k in KEPT_CLAIMS if k in claims},
        )


def _config_problems(config: Config) -> list[str]:
    upstream = config.upstream
    return [
        *required_urls(upstream, "issuer_url"),
        *required_client_id(upstream),
        *optional_urls(upstream, "revocation_endpoint"),
    ]


#: ``[upstream] type = "oidc"``: the endpoints come from the issuer's discovery document.
OIDC = UpstreamType(
    "oidc",
    fields=("issuer_url", "revocation_endpoint", "authorize_params", "subject_claim"),
    config_problems=_config_problems,
    build=OIDCProvider.build,
)
