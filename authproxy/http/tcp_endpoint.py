"""The client endpoint for a TCP host and port: an IP literal is connected to directly.

``HostnameEndpoint`` resolves every host, an IP literal included, through the reactor's
shared thread pool (getaddrinfo). Should that pool ever be busy, a connection to
``127.0.0.1`` would wait behind it; backends, Redis and probes named by address must not.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address


def tcp_endpoint(reactor: Any, host: str, port: int, timeout: float) -> Any:
    """A plain TCP client endpoint to ``host:port`` on ``reactor`` (no lookup for literals)."""
    kind = (
        endpoints.TCP4ClientEndpoint
        if isIPAddress(host)
        else endpoints.TCP6ClientEndpoint
        if isIPv6Address(host)
        else endpoints.HostnameEndpoint
    )
    return kind(reactor, host, port, timeout=timeout)
