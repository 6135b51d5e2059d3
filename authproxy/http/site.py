"""The Site serving every endpoint: per-request bookkeeping in the places Twisted calls once.

``getResourceFor`` runs when a request has been received (its ``X-Request-Id`` is assigned
and echoed), ``log`` when it has finished, or, for a request whose client went away first
(a stream the client closed), when its connection is lost (http/request.py). Between them:
the request's duration for ``/metrics``, authproxy's access line (ops/access_log.py; path
only: query strings carry authorization codes). Its connections are served by ``ResponseChannel``
(channel.py): TCP_NODELAY, and each response leaves in one piece and at once. twisted.web's
own access log (``logPath``) is not used.

The Site also hands its connections their bounds (bounded_channel.py): the head deadline,
the idle timeout and the connection caps, and holds ``head_check``, asked by the request
when its headers are in for its body bound and whether it must be answered before its body
is read (http/request.py).
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Site

from authproxy.http.channel import ResponseChannel
from authproxy.http.connection_limits import ConnectionLimits
from authproxy.http.request import HeadCheck
from authproxy.http.request_id import RequestIds
from authproxy.ops.access_log import AccessLog
from authproxy.ops.metrics import AuthproxyMetrics


class AuthproxySite(Site):
    """A Site that counts, times and (optionally) logs every request."""

    # each response leaves in one piece and at once (channel.py); no HTTP/2 negotiation
    protocol = ResponseChannel  # type: ignore[assignment]

    metrics: AuthproxyMetrics | None = None
    access_log: AccessLog | None = None
    request_ids = RequestIds()
    header_timeout: float = ResponseChannel.header_timeout
    idle_timeout: float = ResponseChannel.idle_timeout
    limits: ConnectionLimits | None = None
    # a request's route, body bound and answer before its body (http/request.py)
    head_check: HeadCheck | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # per connection, not per request: what a graceful shutdown waits for and closes
        self.open_channels: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.open_channels = self.open_channels
        channel.header_timeout = self.header_timeout
        channel.idle_timeout = self.idle_timeout
        channel.limits = self.limits
        return channel

    def getResourceFor(self, request: Any) -> Any:
        request._authproxy_started = self.reactor.seconds()
        request.request_id = request_id = self.request_ids.assign(request)
        request.responseHeaders.setRawHeaders(b"x-request-id", [request_id])
        return super().getResourceFor(request)

    def log(self, request: Any, client_closed: bool = False) -> None:
        started = getattr(request, "_authproxy_started", None)
        elapsed = None if started is None else self.reactor.seconds() - started
        if self.access_log is not None:
            self.access_log.record(request, elapsed, client_closed)
        if self.metrics is not None:
            self.metrics.observe(request, elapsed)
