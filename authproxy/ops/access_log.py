"""The access log: one line per request, formatted at once and written in batches.

Lines go to their own lean path, not through ``twisted.logger``: building an event dict,
publishing it to every observer and formatting it per request cost a third of the proxy's
throughput. Each line is formatted when the request ends (the fields are cheap to read
then), appended to a buffer, and the buffer is written to stdout (where twistd's log goes)
at most ``flush_interval`` later, when it holds ``MAX_BUFFERED`` lines, and when the service
stops. ``logging.format`` chooses text (combined-log style) or one JSON object per line.

Never logged: query strings (they carry authorization codes and states), the Referer
(for the same reason), any header but the User-Agent.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import _escape

from authproxy.authserver.ratelimit import source_address
from authproxy.http.responses import NO_TRUSTED_PROXIES, TrustedProxies

#: Lines held at most before a write, whatever the timer.
MAX_BUFFERED = 512

_MONTHS = (None, "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class AccessLog(Service):
    """Formats each finished request into a line and writes the lines in batches."""

    name = "access-log"

    def __init__(
        self,
        clock: IReactorTime,
        fmt: str = "text",
        out: Callable[[], IO[str]] = lambda: sys.stdout,
        trusted: TrustedProxies = NO_TRUSTED_PROXIES,
        flush_interval: float = 0.25,
    ) -> None:
        self._clock = clock
        self._json = fmt == "json"
        self._out = out  # read at each write: twistd may replace sys.stdout after wiring
        self._trusted = trusted
        self.flush_interval = flush_interval
        self._lines: list[str] = []
        self._timer: Any = None
        self._second = -1
        self._stamp = ""

    def record(self, request: Any, elapsed: float | None, client_closed: bool = False) -> None:
        """Buffer the line of a request that finished (or whose client went away)."""
        fields = self._format_json if self._json else self._format_text
        self._lines.append(fields(request, elapsed, client_closed))
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            self._timer = self._clock.callLater(self.flush_interval, self._flush_timer)

    def _flush_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write every buffered line now."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if not self._lines:
            return
        lines, self._lines = self._lines, []
        out = self._out()
        out.write("".join(lines))
        out.flush()

    def stopService(self) -> Any:
        self.flush()
        return super().stopService()

    def _timestamp(self) -> str:
        # Formatted once per second, not once per line.
        now = self._clock.seconds()
        second = int(now)
        if second != self._second:
            self._second = second
            t = time.gmtime(second)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S+0000", t)
            self._clf = (
                f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"
            )
        return self._stamp

    def _client(self, request: Any) -> str:
        peer = getattr(request.getClientAddress(), "host", None) or "-"
        if self._trusted.networks and self._trusted.trusts(peer):
            # the same resolution as the rate limits (a client cannot choose it)
            return source_address(request, self._trusted)
        return str(peer)

    def _format_text(self, request: Any, elapsed: float | None, client_closed: bool) -> str:
        stamp = self._timestamp()
        path = _escape(request.path.decode("ascii", "replace"))
        method = request.method.decode("ascii", "replace")
        agent = _escape(request.getHeader(b"user-agent") or b"-")
        rid = getattr(request, "request_id", b"-").decode("ascii")
        client_id = getattr(request, "client_id", None) or "-"
        duration = "-" if elapsed is None else f"{elapsed:.3f}"
        closed = " client-closed" if client_closed else ""
        return (
            f'{stamp} [authproxy.access#info] "{_escape(self._client(request))}" - - {self._clf} '
            f'"{method} {path} {request.clientproto.decode("ascii", "replace")}" '
            f'{request.code} {request.sentLength or "-"} "{agent}" {duration} {rid} '
            f"{_escape(client_id)}{closed}\n"
        )

    def _format_json(self, request: Any, elapsed: float | None, client_closed: bool) -> str:
        record = {
            "timestamp": self._timestamp(),
            "level": "info",
            "namespace": "authproxy.access",
            "method": request.method.decode("ascii", "replace"),
            "route": getattr(request, "route", None),
            "path": request.path.decode("utf-8", "replace"),
            "status": request.code,
            "duration": None if elapsed is None else round(elapsed, 6),
            "bytes": request.sentLength,
            "client": self._client(request),
            "user_agent": (request.getHeader(b"user-agent") or b"").decode("utf-8", "replace"),
            "request_id": getattr(request, "request_id", b"").decode("ascii"),
            "client_id": getattr(request, "client_id", None),
        }
        if client_closed:
            record["ended"] = "client"
        return json.dumps(record, separators=(",", ":")) + "\n"
