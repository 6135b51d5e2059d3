"""What the proxy contributes to the root prefix table, and how its parts are built."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IAgent
from twisted.web.resource import Resource

from authproxy.config import Config
from authproxy.keys.ring import KeyRing
from authproxy.ops.metrics import EventCounters
from authproxy.proxy.backend_client import BackendAgent
from authproxy.proxy.guard import BearerGuard
from authproxy.proxy.metadata import WELL_KNOWN, ProtectedResourceMetadata
from authproxy.proxy.resource import MCPProxy
from authproxy.storage.revocations import IRevocations
from authproxy.upstream.interface import IUpstreamProvider


def proxy_routes(config: Config) -> dict[str, Resource]:
    """Exact paths served beside the proxy: the RFC 9728 metadata (path-inserted, and the
    root document, which is the resource's own only for a resource at the root)."""
    return {
        WELL_KNOWN: ProtectedResourceMetadata(config, at_root=True),
        WELL_KNOWN + config.backend.path: ProtectedResourceMetadata(config),
    }


def make_backend_agent(config: Config, reactor: Any) -> BackendAgent:
    """The keep-alive client of the backend MCP server (connect timeout from config)."""
    return BackendAgent(
        reactor,
        config.backend.url,
        connect_timeout=config.backend.connect_timeout,
        max_idle=config.backend.max_connections,
    )


def make_proxy_resource(
    config: Config,
    ring: KeyRing,
    revocations: IRevocations,
    provider: IUpstreamProvider | None,
    reactor: Any,
    agent: IAgent | None = None,
    events: EventCounters | None = None,
) -> MCPProxy:
    """The guarded streaming proxy, to mount as the root prefix table's fallback.

    Without ``agent`` the backend client (backend_client.py) is built; ``close()`` on the
    result closes its idle connections (call it when the service stops).
    """
    pool: BackendAgent | None = None
    if agent is None:
        agent = pool = make_backend_agent(config, reactor)
    guard = BearerGuard.from_config(config, ring, revocations, reactor)
    return MCPProxy(
        config=config,
        guard=guard,
        agent=agent,
        clock=reactor,
        provider=provider,
        pool=pool,
        events=events,
    )
