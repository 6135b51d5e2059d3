"""id_token verification: the IdP's JWKS (cached, refetched on an unknown kid) and the claims.

Only asymmetric algorithms are accepted, and the token's ``alg`` must fit the key that
verifies it (an RSA key never verifies an ES256 header, ``none`` and HS* never pass).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, cast

from jwcrypto.common import JWException
from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from authproxy.http.json import loads_untrusted
from authproxy.keys.algorithms import ASYMMETRIC_ALGS, key_accepts
from authproxy.upstream.http import IdPHTTP
from authproxy.upstream.interface import UpstreamError
from authproxy.upstream.single_flight import SingleFlight

#: Seconds of clock skew tolerated on exp and iat.
LEEWAY = 120.0


class JWKSCache:
    """The IdP's public keys, fetched on first use, refreshed when old or on an unknown kid.

    A refetch for an unknown kid happens at most once per ``min_refetch_interval`` so that
    tokens with made-up kids cannot make authproxy hammer the IdP.
    """

    log = Logger()

    def __init__(
        self,
        http: IdPHTTP,
        clock: IReactorTime,
        jwks_uri: Callable[[], str],
        *,
        max_age: float = 3600.0,
        min_refetch_interval: float = 60.0,
    ) -> None:
        self._http = http
        self._clock = clock
        self._jwks_uri = jwks_uri
        self._max_age = max_age
        self._min_refetch_interval = min_refetch_interval
        self._keys: list[JWK] = []
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._fetches: SingleFlight[None] = SingleFlight()  # concurrent logins share one

    def _now(self) -> float:
        return cast(Any, self._clock).seconds()

    async def candidates(self, kid: str | None, alg: str) -> list[JWK]:
        """The keys that may verify a token with header ``kid`` and ``alg``."""
        now = self._now()
        if self._fetched_at is None or now - self._fetched_at >= self._max_age:
            await self._refetch(keep_on_failure=self._fetched_at is not None)
        found = self._match(kid)
        if not found and kid is not None:
            if self._attempted_at is None or now - self._attempted_at >= self._min_refetch_interval:
                self.log.info("Unknown id_token key id {kid}: refetching the IdP's JWKS", kid=kid)
                await self._refetch(keep_on_failure=True)
                found = self._match(kid)
        if not found:
            raise UpstreamError(
                "the id_token is signed by a key the identity provider does not list"
            )
        usable = [key for key in found if key_accepts(key, alg)]
        if not usable:
            raise UpstreamError("the id_token's alg does not match the identity provider's key")
        return usable

    def _match(self, kid: str | None) -> list[JWK]:
        if kid is None:
            return list(self._keys)
        return [key for key in self._keys if key.get("kid") == kid]

    async def _refetch(self, keep_on_failure: bool) -> None:
        try:
            await self._fetches.run(self._fetch)
        except UpstreamError as e:
            if not keep_on_failure:
                raise
            self.log.warn(
                "Refetching the IdP's JWKS failed, keeping the cached keys: {reason}",
                reason=str(e),
            )

    async def _fetch(self) -> None:
        self._attempted_at = self._now()
        response = await self._http.request(
            "GET", self._jwks_uri(), headers={"Accept": "application/json"}, endpoint="jwks"
        )
        raw_keys = response.body.get("keys")
        if response.status != 200 or not isinstance(raw_keys, list):
            raise UpstreamError(
                f"the identity provider's JWKS is unusable (HTTP {response.status})"
            )
        keys = []
        for raw in raw_keys:
            if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                continue
            if raw.get("kty") not in ("RSA", "EC", "OKP"):
                continue
            try:
                keys.append(JWK(**raw))
            except (JWException, ValueError, TypeError, RecursionError):
                self.log.warn(
                    "Ignoring an unparsable key {kid} in the IdP's JWKS", kid=raw.get("kid")
                )
        self._keys = keys
        self._fetched_at = self._now()
        self.log.info("Fetched the IdP's JWKS: {count} keys", count=len(keys))


async def verify_id_token(
    token: str,
    *,
    keys: JWKSCache,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
) -> dict[str, Any]:
    """Verify signature and claims (iss, aud, azp, exp, iat, nonce, sub); returns the claims."""
    if token.count(".") != 2:
        raise UpstreamError("the id_token is not a compact JWS")
    jws = JWS()
    try:
        jws.deserialize(token)
        header = jws.jose_header
    except (JWException, ValueError, TypeError, RecursionError):
        raise UpstreamError("the id_token is malformed") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGS:
        raise UpstreamError(f"the id_token alg {str(alg)[:16]!r} is not allowed")
    if "crit" in header:
        raise UpstreamError("the id_token has critical header parameters authproxy does not know")
    kid = header.get("kid")
    candidates = await keys.candidates(kid if isinstance(kid, str) else None, alg)
    for key in candidates:
        try:
            jws.verify(key, alg=alg)
        except JWException:
            continue
        break
    else:
        raise UpstreamError("the id_token signature is invalid")
    try:
        claims = loads_untrusted(jws.payload)
    except ValueError:
        raise UpstreamError("the id_token payload is not JSON") from None
    if not isinstance(claims, dict):
        raise UpstreamError("the id_token payload is not a JSON object")
    _check_claims(claims, issuer=issuer, client_id=client_id, nonce=nonce, now=now)
    return claims


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UpstreamError(f"the id_token has no valid {name}")
    return float(value)


def _check_claims(
    claims: dict[str, Any], *, issuer: str, client_id: str, nonce: str | None, now: float
) -> None:
    if claims.get("iss") != issuer:
        raise UpstreamError("the id_token was issued by another issuer")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise UpstreamError("the id_token has no subject")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or client_id not in audiences:
        raise UpstreamError("the id_token is not meant for this client (aud)")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise UpstreamError("the id_token was issued to another party (azp)")
    if now > _number(claims, "exp") + LEEWAY:
        raise UpstreamError("the id_token has expired")
    if _number(claims, "iat") > now + LEEWAY:
        raise UpstreamError("the id_token is issued in the future")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise UpstreamError("the id_token nonce does not match the login")
