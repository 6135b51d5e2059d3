"""The bearer guard: verify authproxy's JWT access tokens on every proxied request.

Tokens are verified against the in-process KeyRing (no JWKS fetch) by the
AccessTokenVerifier that revocation uses too (tokens.py): by ``kid``, with the algorithm
fixed by the key, never by the token. The guard adds audience, expiry and subject. Verified tokens are cached under the SHA-256
of the token until their ``exp``: the signature is checked once per token, not per request.
The cache is dropped whenever the ring's generation changes (a key was added or removed),
and a cached token is re-checked against the revocation deny list whenever the storage's
revocation generation moved, so revocations take effect on the next request.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.config import Config
from authproxy.http.errors import JSONError
from authproxy.http.responses import NO_STORE
from authproxy.keys.ring import KeyRing
from authproxy.proxy.metadata import resource_url
from authproxy.storage.revocations import IRevocations
from authproxy.tokens import MAX_ACCESS_TOKEN_LENGTH, AccessTokenVerifier, InvalidAccessToken

LEEWAY = 60.0
MAX_TOKEN_LENGTH = MAX_ACCESS_TOKEN_LENGTH
CACHE_SIZE = 10_000


@attrs.frozen
class Principal:
    """Who a verified access token speaks for."""

    subject: str
    client_id: str | None
    scopes: frozenset[str]
    jti: str
    exp: float
    tsid: str | None
    claims: Mapping[str, Any] = attrs.field(repr=False, eq=False)


class BearerError(JSONError):
    """The request may not pass; rendered as JSON that no cache keeps, with a
    ``WWW-Authenticate`` challenge (which the protected resource adds:
    :meth:`Challenge.challenge`).

    ``error`` is None for a request that carried no token at all (RFC 6750 §3.1: then the
    challenge names no error, and the body says ``unauthorized``). ``reason`` is the
    refusal's label in ``/metrics`` (``missing_token``, ``expired``, ``revoked``...): by
    default the error code.
    """

    error: str | None  # type: ignore[assignment]

    def __init__(
        self,
        status: int,
        error: str | None,
        description: str,
        scope: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(status, error or "unauthorized", description, headers)
        self.error = error
        self.reason = reason or error or "missing_token"
        self.scope = tuple(scope)

    def payload(self) -> dict[str, str]:
        body = {**super().payload(), "error": self.error or "unauthorized"}
        if self.scope:
            body["scope"] = " ".join(self.scope)
        return body

    def response_headers(self) -> Mapping[str, str]:
        return {**NO_STORE, **self.headers}


def invalid_token(description: str, reason: str = "invalid") -> BearerError:
    return BearerError(401, "invalid_token", description, reason=reason)


@attrs.frozen
class _Verified:
    principal: Principal
    revocation_generation: int


def quote_param(value: str) -> str:
    """``value`` as an RFC 9110 quoted-string (an auth-param of a challenge)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@attrs.frozen
class Challenge:
    """Builds the ``WWW-Authenticate: Bearer`` header for the protected resource.

    ``scopes``: what a client should ask for when it signs in (authserver/scopes.py
    ``initial_scopes``), named by every challenge whose error names none of its own (MCP
    clients request the challenge's scope before anything else).
    """

    realm: str
    resource_metadata: str
    scopes: tuple[str, ...] = ()

    def header(self, error: BearerError) -> str:
        params = [("realm", self.realm), ("resource_metadata", self.resource_metadata)]
        if error.error is not None:
            params.append(("error", error.error))
            params.append(("error_description", error.description))
        scope = error.scope or self.scopes
        if scope:
            params.append(("scope", " ".join(scope)))
        return "Bearer " + ", ".join(f"{k}={quote_param(v)}" for k, v in params)

    def payload(self, error: BearerError) -> dict[str, str]:
        return error.payload()

    def challenge(self, error: BearerError) -> BearerError:
        """``error`` carrying this resource's challenge (RFC 6750 §3: on 400, 401 and 403)."""
        if error.status in (400, 401, 403):
            error.headers["WWW-Authenticate"] = self.header(error)
        return error


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class BearerGuard:
    """Authenticate requests by their ``Authorization: Bearer`` JWT."""

    log = Logger()

    def __init__(
        self,
        *,
        ring: KeyRing,
        revocations: IRevocations,
        clock: IReactorTime,
        issuer: str,
        audiences: Iterable[str],
        required_scopes: Iterable[str] = (),
        cache_size: int = CACHE_SIZE,
        leeway: float = LEEWAY,
    ) -> None:
        self._ring = ring
        self._revocations = revocations
        self._clock = clock
        self._verifier = AccessTokenVerifier(ring, issuer)
        self._audiences = frozenset(audiences)
        self.required_scopes = tuple(required_scopes)
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._cache_size = cache_size
        self._cache_generation = ring.generation
        self._leeway = leeway

    @classmethod
    def from_config(
        cls, config: Config, ring: KeyRing, revocations: IRevocations, clock: IReactorTime
    ) -> BearerGuard:
        # The token must be for this resource (public_url + backend.path). Only when the
        # operator named other audiences instead (e.g. "api://mcp") do those stand for it.
        resource = resource_url(config)
        allowed = config.auth_server.allowed_audiences
        return cls(
            ring=ring,
            revocations=revocations,
            clock=clock,
            issuer=config.auth_server.issuer,
            audiences=(resource,) if resource in allowed else allowed,
            required_scopes=config.auth_server.required_scopes,
        )

    @property
    def cache_size(self) -> int:
        """How many verified tokens are cached right now."""
        return len(self._cache)

    async def authenticate(self, request: Request) -> Principal:
        """The principal of ``request``'s bearer token; raises BearerError otherwise."""
        token = bearer_token(request)
        prechecked = getattr(request, "_authproxy_prechecked", None)
        if prechecked is not None and prechecked[:2] == (token, self._ring.generation):
            principal = await self.verify(token, prechecked[2])
        else:
            principal = await self.verify(token)
        self._check_scopes(principal)
        return principal

    def precheck(self, request: Request) -> None:
        """The checks that need no I/O, for when the headers are in and the body is not:
        raises BearerError when the token is absent, malformed, not signed by the ring, for
        another issuer or audience, expired, or lacks a required scope. Revocation is left to
        ``authenticate``, which reuses a signature verified here (never verified twice)."""
        token = bearer_token(request)
        now = self._clock.seconds()
        self._check_generation()
        cached = self._cache.get(token_hash(token))
        if cached is not None:
            principal = cached.principal
            if principal.exp + self._leeway <= now:
                raise invalid_token("the access token has expired", "expired")
        else:
            principal = self._verify_signed(token, now)
            generation = self._ring.generation
            request._authproxy_prechecked = (token, generation, principal)  # type: ignore[attr-defined]
        self._check_scopes(principal)

    def _check_scopes(self, principal: Principal) -> None:
        missing = [s for s in self.required_scopes if s not in principal.scopes]
        if missing:
            raise BearerError(
                403,
                "insufficient_scope",
                "the token lacks the required scope: " + " ".join(missing),
                scope=self.required_scopes,
            )

    def _check_generation(self) -> None:
        if self._ring.generation != self._cache_generation:
            # A key was added or removed: every cached verdict may be stale.
            self._cache.clear()
            self._cache_generation = self._ring.generation

    async def verify(self, token: str, verified: Principal | None = None) -> Principal:
        """Verify one token (cached); raises BearerError(401, invalid_token) when unusable.

        ``verified``: the principal of a signature ``precheck`` verified moments ago.
        """
        now = self._clock.seconds()
        self._check_generation()
        key = token_hash(token)
        revocations = self._revocations.generation
        cached = self._cache.get(key)
        if cached is not None:
            if cached.principal.exp + self._leeway <= now:
                del self._cache[key]
                raise invalid_token("the access token has expired", "expired")
            self._cache.move_to_end(key)
            if cached.revocation_generation == revocations:
                return cached.principal
            principal = cached.principal
        elif verified is not None and verified.exp + self._leeway > now:
            principal = verified
        else:
            principal = self._verify_signed(token, now)
        if await self._revocations.is_jti_revoked(principal.jti):
            self._cache.pop(key, None)
            raise invalid_token("the access token has been revoked", "revoked")
        if self._ring.generation == self._cache_generation:
            self._cache[key] = _Verified(principal, revocations)  # new keys go to the end
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _verify_signed(self, token: str, now: float) -> Principal:
        try:
            claims = self._verifier.verify(token)
        except InvalidAccessToken as e:
            raise invalid_token(str(e)) from None
        return self._check_claims(claims, now)

    def _check_claims(self, claims: dict[str, Any], now: float) -> Principal:
        aud = claims.get("aud")
        listed = aud if isinstance(aud, list) else [aud]
        if not all(isinstance(a, str) for a in listed):
            # RFC 7519 §4.1.3: a string or an array of strings; anything else is malformed.
            raise invalid_token("the access token's aud claim is malformed")
        if not set(listed) & self._audiences:
            raise invalid_token("the access token is not meant for this resource", "wrong_audience")
        exp = _finite_number(claims.get("exp"))
        if exp is None:
            raise invalid_token("the access token has no usable expiry")
        if exp + self._leeway <= now:
            raise invalid_token("the access token has expired", "expired")
        raw_nbf = claims.get("nbf")
        nbf = _finite_number(raw_nbf)
        if raw_nbf is not None and (nbf is None or nbf - self._leeway > now):
            raise invalid_token("the access token is not valid yet")
        sub, jti = claims.get("sub"), claims.get("jti")
        if not isinstance(sub, str) or not sub or not isinstance(jti, str) or not jti:
            raise invalid_token("the access token lacks sub or jti")
        scopes: set[str] = set()
        if isinstance(claims.get("scope"), str):
            scopes.update(claims["scope"].split())
        if isinstance(claims.get("scp"), list):
            scopes.update(s for s in claims["scp"] if isinstance(s, str))
        client_id, tsid = claims.get("client_id"), claims.get("tsid")
        return Principal(
            subject=sub,
            client_id=client_id if isinstance(client_id, str) else None,
            scopes=frozenset(scopes),
            jti=jti,
            exp=exp,
            tsid=tsid if isinstance(tsid, str) and tsid else None,
            claims=claims,
        )


def _finite_number(value: object) -> float | None:
    """``value`` as a finite float, or None (not a number, a bool, NaN, inf or too large)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def bearer_token(request: Request) -> str:
    """The bearer token of ``request``'s Authorization header; raises BearerError otherwise."""
    query = request.uri.partition(b"?")[2]
    # A substring test first: most queries (legacy SSE's ?session_id=) need no parsing.
    if b"access_token" in query and "access_token" in parse_qs(query.decode("latin-1")):
        raise BearerError(
            400,
            "invalid_request",
            "access tokens are accepted only in the Authorization header, not in the query",
        )
    values = request.requestHeaders.getRawHeaders(b"authorization") or []
    if len(values) > 1:
        raise BearerError(400, "invalid_request", "more than one Authorization header")
    if not values:
        raise BearerError(401, None, "an access token is required")
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    if scheme.lower() != "bearer":
        raise BearerError(401, None, "an access token is required (Authorization: Bearer)")
    token = token.strip()
    if not token or " " in token or len(token) > MAX_TOKEN_LENGTH:
        raise invalid_token("the Authorization header is malformed", "malformed")
    return token
