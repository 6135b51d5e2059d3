"""The access log: one line per request, formatted at once and written in batches.

Lines go to their own lean path, not through ``twisted.logger``: building an event dict,
publishing it to every observer and formatting it per request cost a third of the proxy's
throughput. Each line is formatted when the request ends (the fields are cheap to read
then), appended to a buffer, and the buffer is written at most ``flush_interval`` later,
when it holds ``MAX_BUFFERED`` lines, and when the service stops. It is written where the
log observer writes (the daemon's stdout, ``TwistdLogging.access_stream``), never to
twistd's replacement of ``sys.stdout``, which makes each line a log event of its own.
``logging.format`` chooses text (combined-log style) or one JSON object per line.

Never logged: query strings (they carry authorization codes and states), the Referer
(for the same reason), any header but the User-Agent.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import IO, Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import _escape

from authproxy.authserver.ratelimit import source_address
from authproxy.http.responses import NO_TRUSTED_PROXIES, TrustedProxies

#: Lines held at most before a write, whatever the timer.
MAX_BUFFERED = 512

#: Escaped field values remembered (``AccessLog._escaped``), each at most this long.
_CACHED_VALUES = 1024
_CACHED_LENGTH = 256

_ENDED_BY_CLIENT = ',"ended":"client"'

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
        self._escape: Callable[[bytes], str] = _json_string if self._json else _escape
        #: the stream, read at each write (the daemon's: ``TwistdLogging.access_stream``)
        self.out = out
        self._trusted = trusted
        self.flush_interval = flush_interval
        self._lines: list[str] = []
        self._timer: Any = None
        self._second = -1
        self._stamp = ""
        self._escapes: dict[bytes | str, str] = {}

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
        out = self.out()
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
        if not self._trusted.networks or peer == "-":
            return str(peer)
        # the same resolution as the rate limits (a client cannot choose it); it checks
        # whether the peer is trusted itself
        return source_address(request, self._trusted)

    def _escaped(self, value: bytes | str) -> str:
        """``value`` as a field: escaped for quotes (text, as twisted.web's combined log
        does it) or a JSON string literal (json).

        Escaping cost more than the rest of a line; paths, agents, methods and client ids
        repeat, so each short one is escaped once. The cache is emptied when full.
        """
        text = self._escapes.get(value)
        if text is None:
            raw = value.encode("utf-8") if isinstance(value, str) else value
            text = self._escape(raw)
            if len(raw) <= _CACHED_LENGTH:
                if len(self._escapes) >= _CACHED_VALUES:
                    self._escapes.clear()
                self._escapes[value] = text
        return text

    def _format_text(self, request: Any, elapsed: float | None, client_closed: bool) -> str:
        stamp = self._timestamp()
        escaped = self._escaped
        agent = escaped(request.getHeader(b"user-agent") or b"-")
        rid = getattr(request, "request_id", b"-").decode("ascii")
        client_id = escaped(getattr(request, "client_id", None) or "-")
        duration = "-" if elapsed is None else f"{elapsed:.3f}"
        closed = " client-closed" if client_closed else ""
        return (
            f'{stamp} [authproxy.access#info] "{escaped(self._client(request))}" - - {self._clf} '
            f'"{escaped(request.method)} {escaped(request.path)} {escaped(request.clientproto)}" '
            f'{request.code} {request.sentLength or "-"} "{agent}" {duration} {rid} '
            f"{client_id}{closed}\n"
        )

    def _format_json(self, request: Any, elapsed: float | None, client_closed: bool) -> str:
        # Written field by field: json.dumps of a dict per line cost twice the whole text line.
        escaped = self._escaped
        route = getattr(request, "route", None)
        client_id = getattr(request, "client_id", None)
        user_agent = request.getHeader(b"user-agent") or b""
        duration = "null" if elapsed is None else repr(round(elapsed, 6))
        sent = request.sentLength
        return (
            f'{{"timestamp":"{self._timestamp()}","level":"info","namespace":"authproxy.access",'
            f'"method":{escaped(request.method)},'
            f'"route":{"null" if route is None else escaped(route)},'
            f'"path":{escaped(request.path)},"status":{int(request.code)},'
            f'"duration":{duration},"bytes":{"null" if sent is None else int(sent)},'
            f'"client":{escaped(self._client(request))},"user_agent":{escaped(user_agent)},'
            f'"request_id":{escaped(getattr(request, "request_id", b""))},'
            f'"client_id":{"null" if client_id is None else escaped(client_id)}'
            f"{_ENDED_BY_CLIENT if client_closed else ''}}}\n"
        )


def _json_string(raw: bytes) -> str:
    """A JSON string literal of ``raw`` (UTF-8, undecodable bytes replaced), ASCII-only."""
    return encode_basestring_ascii(raw.decode("utf-8", "replace"))
