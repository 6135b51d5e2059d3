"""Is the IdP up? A cheap TCP probe before sending a browser there.

authproxy hands the login to the IdP with a browser redirect, which authproxy never sees
fail: with the IdP down the user would get the browser's own connection error. So before
each redirect authproxy opens (and closes) a TCP connection to the authorization
endpoint's host. Logins are rare next to MCP traffic, so the probe is not cached: a cached
"up" would send the next users to a dead IdP, a cached "down" would keep them out after
it came back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.protocol import Factory, Protocol

from authproxy.upstream.interface import UpstreamUnavailable


class ReachabilityProbe:
    """Answers whether the host of an IdP URL accepts TCP connections."""

    def __init__(self, reactor: Any, timeout: float = 3.0) -> None:
        self._reactor = reactor
        self._timeout = timeout

    def check(self, url: str) -> Deferred[None]:
        """Fires when ``url``'s host is reachable; fails with UpstreamUnavailable otherwise."""
        return ensureDeferred(self._check(url))

    async def _check(self, url: str) -> None:
        # A test Clock cannot connect anywhere; nothing to probe there.
        if not IReactorTCP.providedBy(self._reactor):
            return
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        endpoint = HostnameEndpoint(
            self._reactor, parts.hostname or "", port, timeout=self._timeout
        )
        try:
            factory = Factory.forProtocol(Protocol)
            factory.noisy = False
            protocol: Any = await endpoint.connect(factory)
        except Exception:
            raise UpstreamUnavailable(
                "the identity provider cannot be reached right now", retry_after=10
            ) from None
        if protocol.transport is not None:
            protocol.transport.loseConnection()
