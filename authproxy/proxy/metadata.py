"""RFC 9728 OAuth 2.0 Protected Resource Metadata for the proxied MCP resource.

The document is served at the path-inserted URL of the resource (RFC 9728 §3.1:
``/.well-known/oauth-protected-resource/mcp`` for ``https://host/mcp``), which the guard's
challenges name. RFC 9728 §3.3 requires a document's ``resource`` to be the URL it was
fetched for, so the root ``/.well-known/oauth-protected-resource`` (the metadata of
``https://host`` itself) is served only when the MCP resource is the host's root; otherwise
it answers 404, naming where the MCP resource's metadata is. (Serving the ``/mcp`` document
there, as authproxy once did, made strict clients refuse it; naming ``https://host`` there
would advertise a resource whose tokens this proxy refuses.)
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from twisted.web.resource import Resource
from twisted.web.server import Request

from authproxy.authserver.scopes import REFRESH_SCOPE
from authproxy.config import Config
from authproxy.http.cors import PublicCORS
from authproxy.http.errors import BadHeader, JSONError, render_error

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def resource_url(config: Config) -> str:
    """The exact public URL of the MCP resource: public_url + backend.path."""
    return config.server.public_url.rstrip("/") + config.backend.path


def metadata_url(config: Config) -> str:
    """Where clients find the metadata (the path-inserted form for the MCP path)."""
    return config.server.public_url.rstrip("/") + WELL_KNOWN + config.backend.path


def resource_name(config: Config) -> str:
    """The name people see for the resource: ``[proxy] resource_name``, or one from the host."""
    host = urlsplit(config.server.public_url).netloc
    return config.proxy.resource_name or f"MCP server at {host}"


def root_is_resource(config: Config) -> bool:
    """Whether the MCP resource is the public URL's root (then the root document is its own)."""
    return config.backend.path in ("", "/") and urlsplit(config.server.public_url).path in ("", "/")


def protected_resource_metadata(config: Config) -> dict[str, Any]:
    """The RFC 9728 document for the MCP resource.

    ``scopes_supported`` lists every scope the resource may ask for: the initial ones and
    the scope rules' (step-up) ones, never ``offline_access`` (a request for a refresh token,
    not for access to the resource).
    """
    return {
        "resource": resource_url(config),
        "resource_name": resource_name(config),
        "authorization_servers": [config.auth_server.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": [s for s in config.auth_server.scopes_supported if s != REFRESH_SCOPE],
    }


def not_this_resource(config: Config) -> JSONError:
    """The root document's 404 when the MCP resource lives at a path (RFC 9728 §3.3)."""
    return JSONError(
        404,
        "not_found",
        "this host's root is not an OAuth protected resource; the MCP resource's metadata "
        f"is at {metadata_url(config)}",
        {"Cache-Control": "public, max-age=300"},
    )


class ProtectedResourceMetadata(Resource):
    """Serves the metadata document as JSON, readable cross-origin (browser-based clients).

    ``at_root``: this is the root document, which names the MCP resource only when that is
    the host's root (``root_is_resource``), and otherwise answers 404.
    """

    isLeaf = True
    _CORS = PublicCORS(
        "GET, OPTIONS", "MCP-Protocol-Version, Content-Type", echo_request_headers=True
    )

    def __init__(self, config: Config, at_root: bool = False) -> None:
        super().__init__()
        self._body = json.dumps(protected_resource_metadata(config), separators=(",", ":")).encode()
        self._refusal = (
            not_this_resource(config) if at_root and not root_is_resource(config) else None
        )

    def render(self, request: Request) -> bytes:
        try:
            return bytes(super().render(request))
        except BadHeader as e:
            return render_error(request, e)

    def render_GET(self, request: Request) -> bytes:
        self._CORS.allow(request)
        if self._refusal is not None:
            return render_error(request, self._refusal)
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Cache-Control", "public, max-age=300")
        return self._body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)

    def render_OPTIONS(self, request: Request) -> bytes:
        return self._CORS.preflight(request)
