"""Authorization server metadata (RFC 8414) and the OpenID Connect discovery document.

MCP clients read one of the two before registering; both describe the same server. They
are public, cacheable and served with CORS so browser-based clients can read them.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.authserver.grants import GRANTS
from authproxy.authserver.openid_claims import OPENID_SCOPE, claims_supported
from authproxy.config import Config
from authproxy.http.cors import CLIENT_REQUEST_HEADERS, PublicCORS
from authproxy.keys.ring import KeyRing

AUTHORIZATION_SERVER_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION_WELL_KNOWN = "/.well-known/openid-configuration"
METADATA_MAX_AGE = 300

AUTHORIZE_PATH = "/oauth/authorize"
CALLBACK_PATH = "/oauth/callback"
CONSENT_PATH = "/oauth/consent"
TOKEN_PATH = "/oauth/token"
REGISTER_PATH = "/oauth/register"
REVOKE_PATH = "/oauth/revoke"
USERINFO_PATH = "/oauth/userinfo"
JWKS_PATH = "/.well-known/jwks.json"


def server_metadata(config: Config) -> dict[str, Any]:
    """The RFC 8414 document. Endpoints live under ``server.public_url``."""
    base = config.server.public_url.rstrip("/")
    auth = config.auth_server
    document: dict[str, Any] = {
        "issuer": auth.issuer,
        "authorization_endpoint": base + AUTHORIZE_PATH,
        "token_endpoint": base + TOKEN_PATH,
        "registration_endpoint": base + REGISTER_PATH,
        "revocation_endpoint": base + REVOKE_PATH,
        "jwks_uri": base + JWKS_PATH,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANTS.grant_types),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "revocation_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": list(auth.scopes_supported),
        "authorization_response_iss_parameter_supported": True,
    }
    if not auth.registration.enabled:
        del document["registration_endpoint"]
    if auth.client_metadata_documents.enabled:
        document["client_id_metadata_document_supported"] = True
    if is_openid_provider(config):
        document["userinfo_endpoint"] = base + USERINFO_PATH
        document["claims_supported"] = claims_supported(auth.scopes_supported)
    return document


def is_openid_provider(config: Config) -> bool:
    """Whether authproxy acts as an OpenID provider: only when ``openid`` is a served scope.

    Without it no ID token can be issued, so there is no OpenID discovery document and no
    userinfo endpoint: nothing is advertised that is not served.
    """
    return OPENID_SCOPE in config.auth_server.scopes_supported


def openid_configuration(config: Config, ring: KeyRing) -> dict[str, Any]:
    """The OIDC discovery document: the RFC 8414 fields plus what OIDC requires.

    Every field OIDC Discovery §3 makes REQUIRED is here (issuer, the authorization, token
    and JWKS endpoints, response types, subject types, ID token algorithms), and the
    RECOMMENDED userinfo endpoint, scopes and claims.
    """
    document = server_metadata(config)
    algs = list(dict.fromkeys(key.alg for key in ring.signing_keys))
    document.update(
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=algs,
    )
    return document


def metadata_paths(issuer: str) -> tuple[list[str], list[str]]:
    """(RFC 8414 paths, OIDC paths) to mount for ``issuer``.

    Without an issuer path, only the plain well-known names. With one (``/tenant``), also
    RFC 8414's path-inserted form (``/.well-known/oauth-authorization-server/tenant``), and for
    OIDC both the appended form OIDC Discovery defines (``/tenant/.well-known/openid-
    configuration``) and the path-inserted form that MCP clients try first.
    """
    path = urlsplit(issuer).path.rstrip("/")
    oauth = [AUTHORIZATION_SERVER_WELL_KNOWN]
    oidc = [OPENID_CONFIGURATION_WELL_KNOWN]
    if path:
        oauth.append(AUTHORIZATION_SERVER_WELL_KNOWN + path)
        oidc.append(OPENID_CONFIGURATION_WELL_KNOWN + path)
        oidc.append(path + OPENID_CONFIGURATION_WELL_KNOWN)
    return oauth, oidc


class MetadataResource(Resource):
    """Serves one metadata document as JSON, with CORS and a short public cache lifetime.

    The OIDC document lists the signing algorithms of the ring's keys, so it is rebuilt when
    the key ring's generation changes.
    """

    isLeaf = True
    _CORS = PublicCORS("GET, HEAD, OPTIONS", CLIENT_REQUEST_HEADERS)

    def __init__(self, config: Config, ring: KeyRing, *, openid: bool) -> None:
        super().__init__()
        self._config = config
        self._ring = ring
        self._openid = openid
        self._cached: tuple[int, bytes] | None = None

    def _body(self) -> bytes:
        generation = self._ring.generation
        if self._cached is None or self._cached[0] != generation:
            document: dict[str, Any]
            if self._openid:
                document = openid_configuration(self._config, self._ring)
            else:
                document = server_metadata(self._config)
            self._cached = (generation, json.dumps(document, separators=(",", ":")).encode())
        return self._cached[1]

    def render_GET(self, request: Request) -> bytes:
        self._CORS.allow(request)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", f"public, max-age={METADATA_MAX_AGE}")
        return self._body()

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)

    def render_OPTIONS(self, request: Request) -> bytes:
        return self._CORS.preflight(request)


def metadata_routes(config: Config, ring: KeyRing) -> dict[str, Resource]:
    """Every metadata path for ``config``'s issuer, mapped to its Resource (the OpenID
    discovery paths only when authproxy is an OpenID provider)."""
    oauth_paths, oidc_paths = metadata_paths(config.auth_server.issuer)
    oauth = MetadataResource(config, ring, openid=False)
    oidc = MetadataResource(config, ring, openid=True)
    routes: dict[str, Resource] = {}
    for path in oauth_paths:
        routes[path] = oauth
    if not is_openid_provider(config):
        return routes
    for path in oidc_paths:
        routes[path] = oidc
    return routes
