"""Is the IdP up? A cheap TCP probe before sending a browser there.

authproxy hands the login to the IdP with a browser redirect, which authproxy never sees
fail: with the IdP down the user would get the browser's own connection error. So before
each redirect authproxy opens (and closes) a TCP connection to the authorization
endpoint's host. Logins are rare next to MCP traffic, so the probe is not cached: a cached
"up" would send the next users to a dead IdP, a cached "down" would keep them out after
it came back.

Whether to probe at all is the wiring's choice (authproxy.application.HostFacilities): the
daemon does; an application built on a test reactor gets no probe, since a fake reactor
cannot connect anywhere.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred

from authproxy.http.tcp_probe import accepts_connections, url_host_port
from authproxy.upstream.interface import UpstreamUnavailable


class ReachabilityProbe:
    """Answers whether the host of an IdP URL accepts TCP connections."""

    def __init__(self, reactor: Any, timeout: float = 3.0) -> None:
        """``reactor`` provides IReactorTCP and IReactorTime: it really connects."""
        self._reactor = reactor
        self._timeout = timeout

    def check(self, url: str) -> Deferred[None]:
        """Fires when ``url``'s host is reachable; fails with UpstreamUnavailable otherwise."""
        return ensureDeferred(self._check(url))

    async def _check(self, url: str) -> None:
        host, port = url_host_port(url)
        if not await accepts_connections(self._reactor, host, port, self._timeout):
            raise UpstreamUnavailable(
                "the identity provider cannot be reached right now", retry_after=10
            )
