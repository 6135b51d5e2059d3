"""RFC 9728 OAuth 2.0 Protected Resource Metadata for the proxied MCP resource."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.config import Config
from authproxy.http.cors import PublicCORS
from authproxy.http.errors import BadHeader, render_error

WELL_KNOWN = "/.well-known/oauth-protected-resource"
# Never advertised: it is a request for a refresh token, not access to the resource.
_NOT_ADVERTISED = frozenset({"offline_access"})


def resource_url(config: Config) -> str:
    """The exact public URL of the MCP resource: public_url + backend.path."""
    return config.server.public_url.rstrip("/") + config.backend.path


def metadata_url(config: Config) -> str:
    """Where clients find the metadata (the path-inserted form for the MCP path)."""
    return config.server.public_url.rstrip("/") + WELL_KNOWN + config.backend.path


def protected_resource_metadata(config: Config) -> dict[str, Any]:
    """The RFC 9728 document for the MCP resource."""
    return {
        "resource": resource_url(config),
        "authorization_servers": [config.auth_server.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [
            s for s in config.auth_server.scopes_supported if s not in _NOT_ADVERTISED
        ],
    }


class ProtectedResourceMetadata(Resource):
    """Serves the metadata document as JSON, readable cross-origin (browser-based clients)."""

    isLeaf = True
    _CORS = PublicCORS(
        "GET, OPTIONS", "MCP-Protocol-Version, Content-Type", echo_request_headers=True
    )

    def __init__(self, config: Config) -> None:
        super().__init__()
        self._body = json.dumps(protected_resource_metadata(config), separators=(",", ":")).encode()

    def render(self, request: Request) -> bytes:
        try:
            return bytes(super().render(request))
        except BadHeader as e:
            return render_error(request, e)

    def render_GET(self, request: Request) -> bytes:
        self._CORS.allow(request)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "public, max-age=300")
        return self._body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)

    def render_OPTIONS(self, request: Request) -> bytes:
        return self._CORS.preflight(request)
