"""The OpenID userinfo endpoint, ``/oauth/userinfo`` (OIDC Core §5.3), GET and POST.

Bearer-protected by authproxy's own access tokens, verified exactly as the proxy verifies
them (the guard's verifier: signature by the key ring, issuer, expiry, revocation). The
userinfo endpoint belongs to the authorization server, which issues tokens only for the
resources in ``auth_server.allowed_audiences``; it accepts a token for any of them, since
the client asking is the one those tokens were issued to. The token must carry ``openid``
(else 403 ``insufficient_scope``). The answer is built from the verified token alone (the
profile claims ride in it): no storage read, and it says what the ID token said.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver.openid_claims import OPENID_SCOPE, scoped_claims
from authproxy.http.cors import CLIENT_REQUEST_HEADERS, PublicCORS
from authproxy.http.resource import AsyncResource
from authproxy.http.responses import NO_STORE, json_body
from authproxy.proxy.guard import BearerError, BearerGuard, bearer_token, quote_param


class UserinfoResource(AsyncResource):
    """``GET``/``POST /oauth/userinfo``: the signed-in user's claims, by the token's scopes."""

    log = Logger()
    cors = PublicCORS("GET, POST, OPTIONS", CLIENT_REQUEST_HEADERS)

    def __init__(self, guard: BearerGuard, realm: str) -> None:
        """``guard`` verifies the tokens (its audiences: every allowed one); ``realm``: the
        issuer, named in challenges."""
        super().__init__()
        self.guard = guard
        self.realm = realm

    async def handle_GET(self, request: Request) -> bytes:
        self.cors.allow(request)
        try:
            principal = await self.guard.verify(bearer_token(request))
            if OPENID_SCOPE not in principal.scopes:
                raise BearerError(
                    403,
                    "insufficient_scope",
                    "the access token lacks the openid scope",
                    scope=(OPENID_SCOPE,),
                )
        except BearerError as e:
            raise self._challenge(e) from None
        claims = {"sub": principal.subject, **scoped_claims(principal.scopes, principal.claims)}
        return json_body(request, 200, claims, NO_STORE)

    handle_POST = handle_GET

    async def handle_OPTIONS(self, request: Request) -> bytes:
        return self.cors.preflight(request)

    def _challenge(self, error: BearerError) -> BearerError:
        """RFC 6750 §3: ``WWW-Authenticate`` on every refusal, naming the error if any."""
        params = [("realm", self.realm)]
        if error.error is not None:
            params += [("error", error.error), ("error_description", error.description)]
        if error.scope:
            params.append(("scope", " ".join(error.scope)))
        error.headers["WWW-Authenticate"] = "Bearer " + ", ".join(
            f"{k}={quote_param(v)}" for k, v in params
        )
        return error
