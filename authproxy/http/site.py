"""The Site serving every endpoint: per-request bookkeeping in the places Twisted calls once.

``getResourceFor`` runs when a request has been received, ``log`` when it has finished.
Between them: the request's duration for ``/metrics``, authproxy's access line (path only:
query strings carry authorization codes). Its connections are served by ``ResponseChannel``
(channel.py): TCP_NODELAY, and each response leaves in one piece and at once. twisted.web's
own access log (``logPath``) is not used.

The Site also hands its connections their bounds (bounded_channel.py): the head deadline,
the idle timeout and the connection caps, and holds ``head_check``, asked by the request
when its headers are in for its body bound and whether it must be answered before its body
is read (http/request.py).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger
from twisted.web.server import Site

from authproxy.http.channel import ResponseChannel
from authproxy.http.connection_limits import ConnectionLimits
from authproxy.http.request import HeadCheck
from authproxy.ops.logs import access_log_line
from authproxy.ops.metrics import AuthproxyMetrics

_access = Logger(namespace="authproxy.access")


class AuthproxySite(Site):
    """A Site that counts, times and (optionally) logs every request."""

    # each response leaves in one piece and at once (channel.py); no HTTP/2 negotiation
    protocol = ResponseChannel  # type: ignore[assignment]

    metrics: AuthproxyMetrics | None = None
    access_log = False
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
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        if self.access_log:
            line = access_log_line(self._logDateTime or "-", request)
            _access.info("{access}", access=line)
        if self.metrics is not None:
            started = getattr(request, "_authproxy_started", None)
            elapsed = None if started is None else self.reactor.seconds() - started
            self.metrics.observe(request, elapsed)
