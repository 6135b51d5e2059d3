"""Incremental rewriting of the legacy SSE transport's ``event: endpoint``.

A legacy (HTTP+SSE) MCP server announces where clients must POST their messages in the
first event of its stream: ``event: endpoint`` / ``data: /messages/?session_id=...``.
Behind authproxy that URL must point at authproxy, so the relay rewrites it. The stream
is parsed incrementally: chunks may split an event anywhere (even between ``\\r`` and
``\\n``). Each event is held only until its blank line, which is when a client dispatches
it anyway, and only up to a small cap; chunks that contain no endpoint event at an event
boundary pass through without being parsed at all.

The message URL names the session: anyone posting to it speaks in it. ``session_key`` gives
the key under which authproxy binds it to the stream's user and client (proxy/resource.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

import attrs

_EOL = re.compile(rb"\r\n|\r|\n")
# An event this large cannot be an endpoint announcement: stop holding it back.
MAX_HELD_EVENT = 64 * 1024
# The query parameter naming the session: Python SDK, then TypeScript/Go/Java SDKs.
SESSION_PARAMETERS = (b"session_id", b"sessionId")


def session_key(target: bytes) -> tuple[bytes, bool]:
    """The key of the legacy session a message URL target (``/path?query``) names, and
    whether its query names one.

    One session parameter (decoded as backends decode it: ``session%5Fid=a%62c`` is
    ``session_id=abc``): the key is its value. Otherwise the key is the whole target, so a
    backend that names sessions some other way is matched on the exact URL it announced, and
    a target repeating the parameter (a backend may read the first or the last) can only
    match an announcement repeating it identically.
    """
    _, sep, query = target.partition(b"?")
    if sep and query:
        values = [
            value
            for name, value in parse_qsl(query, keep_blank_values=True)
            if name in SESSION_PARAMETERS
        ]
        if len(values) == 1:
            return b"sid:" + values[0], True
        if values:
            return b"url:" + target, True
    return b"url:" + target, False


def announced_target(url: str) -> bytes:
    """``/path?query`` of a (rewritten, public) endpoint URL: what its client will request."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return target.encode("utf-8")


class EndpointEventRewriter:
    """Feed backend SSE bytes in, get bytes for the client out; only endpoint data changes."""

    def __init__(self, rewrite: Callable[[str], str], max_held: int = MAX_HELD_EVENT) -> None:
        self._rewrite = rewrite
        self._max_held = max_held
        self._partial = b""  # an unterminated line (held events only)
        self._held: list[bytes] = []  # complete raw lines of the current event
        self._held_size = 0
        self._streaming = False  # the current event is too large: pass it through as is
        self._line_open = False  # streaming: a line of the current event has started
        self._cr_pending = False  # the last line ended in "\r"; a "\n" may complete it
        self._cr_held = False  # ... and that line is in self._held

    def _at_boundary(self) -> bool:
        return not (self._partial or self._held or self._streaming or self._cr_pending)

    def feed(self, data: bytes) -> bytes:
        """Process one chunk; returns what can be sent to the client now."""
        if (
            self._at_boundary()
            and b"endpoint" not in data
            and data.endswith((b"\n\n", b"\r\n\r\n"))
        ):
            return data
        out = bytearray()
        if self._cr_pending and data:
            self._cr_pending = False
            if data[:1] == b"\n":
                if self._cr_held:
                    self._held[-1] += b"\n"
                    self._held_size += 1
                else:
                    out += b"\n"
                data = data[1:]
        if self._streaming:
            data = self._stream(data, out)
        buf = self._partial + data
        self._partial = b""
        start = 0
        for match in _EOL.finditer(buf):
            line = buf[start : match.end()]
            blank = match.start() == start
            start = match.end()
            if match.group() == b"\r" and start == len(buf):
                self._cr_pending = True
            if self._streaming:
                # Only reachable after the cap switched us to streaming mid-buffer.
                out += line
                self._cr_held = False
                if blank and not self._line_open:
                    self._streaming = False
                self._line_open = False
                continue
            if blank:
                out += self._finish_event(line)
                self._cr_held = False
                continue
            self._held.append(line)
            self._held_size += len(line)
            self._cr_held = True
            if self._held_size > self._max_held:
                out += b"".join(self._held)
                self._held, self._held_size = [], 0
                self._streaming, self._line_open, self._cr_held = True, False, False
        rest = buf[start:]
        if rest:
            if self._streaming:
                out += rest
                self._line_open = True
            else:
                self._partial = rest
                if len(self._partial) + self._held_size > self._max_held:
                    out += b"".join(self._held) + self._partial
                    self._held, self._held_size, self._partial = [], 0, b""
                    self._streaming, self._line_open = True, True
        return bytes(out)

    def _stream(self, data: bytes, out: bytearray) -> bytes:
        """Pass an oversized event through up to its end; returns the bytes after it."""
        start = 0
        for match in _EOL.finditer(data):
            blank = match.start() == start and not self._line_open
            out += data[start : match.end()]
            start = match.end()
            self._line_open = False
            if match.group() == b"\r" and start == len(data):
                self._cr_pending, self._cr_held = True, False
            if blank:
                self._streaming = False
                return data[start:]
        if start < len(data):
            out += data[start:]
            self._line_open = True
        return b""

    def _finish_event(self, terminator: bytes) -> bytes:
        lines, self._held, self._held_size = self._held, [], 0
        if _event_name(lines) == "endpoint":
            lines = self._rewrite_data(lines)
        return b"".join(lines) + terminator

    def _rewrite_data(self, lines: list[bytes]) -> list[bytes]:
        data_lines = [
            (i, value) for i, (name, value) in enumerate(map(_field, lines)) if name == b"data"
        ]
        if not data_lines:
            return lines
        url = "\n".join(v.decode("utf-8", "replace") for _, v in data_lines)
        new = self._rewrite(url)
        first = data_lines[0][0]
        eol = _EOL.search(lines[first])
        terminator = eol.group() if eol else b"\n"
        out = []
        for i, line in enumerate(lines):
            if i == first:
                out.append(b"data: " + new.encode("utf-8") + terminator)
            elif i not in {j for j, _ in data_lines}:
                out.append(line)
        return out

    def flush(self) -> bytes:
        """At the end of the stream: whatever is still held, unchanged (an unfinished event)."""
        out = b"".join(self._held) + self._partial
        self._held, self._held_size, self._partial = [], 0, b""
        return out


def _field(line: bytes) -> tuple[bytes, bytes]:
    line = line.rstrip(b"\r\n")
    name, sep, value = line.partition(b":")
    if sep and value.startswith(b" "):
        value = value[1:]
    return name, value


def _event_name(lines: list[bytes]) -> str:
    name = "message"
    for line in lines:
        field, value = _field(line)
        if field == b"event":
            name = value.decode("utf-8", "replace")
    return name


@attrs.frozen
class EndpointURLMapper:
    """Map a message URL announced by the backend to the URL the client must use.

    ``backend_url`` is the configured backend base URL (its path is a prefix that public paths
    do not carry); ``public_url`` is ``server.public_url``. A relative announcement stays
    relative (path-absolute, under the public URL's path); an absolute one becomes an absolute
    URL under the public URL. The query is preserved.
    """

    backend_url: str
    public_url: str

    def __call__(self, announced: str, stream_url: str) -> str:
        """``announced`` as sent in the stream fetched from backend URL ``stream_url``."""
        announced = announced.strip()
        absolute = bool(urlsplit(announced).scheme)
        resolved = urlsplit(urljoin(stream_url, announced))
        prefix = urlsplit(self.backend_url).path.rstrip("/")
        path = resolved.path or "/"
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :] or "/"
        public = urlsplit(self.public_url)
        public_path = public.path.rstrip("/") + path
        if absolute:
            return urlunsplit((public.scheme, public.netloc, public_path, resolved.query, ""))
        return urlunsplit(("", "", public_path, resolved.query, ""))
