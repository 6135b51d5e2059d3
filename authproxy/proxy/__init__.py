"""The guarded streaming reverse proxy in front of the MCP server.

Public API: ``make_proxy_resource`` (the prefix table's fallback), ``proxy_routes`` (the
RFC 9728 metadata paths) and ``make_request_factory`` (the Site's request class that refuses
oversized bodies early).
"""

from authproxy.http.request import LimitedRequest, make_request_factory
from authproxy.proxy.guard import BearerError, BearerGuard, Principal
from authproxy.proxy.metadata import ProtectedResourceMetadata, protected_resource_metadata
from authproxy.proxy.resource import MCPProxy
from authproxy.proxy.routes import make_proxy_resource, proxy_routes

__all__ = [
    "BearerError",
    "BearerGuard",
    "LimitedRequest",
    "MCPProxy",
    "Principal",
    "ProtectedResourceMetadata",
    "make_proxy_resource",
    "make_request_factory",
    "protected_resource_metadata",
    "proxy_routes",
]
