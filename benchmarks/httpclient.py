"""A small, fast asyncio HTTP/1.1 client and the load generators wrk cannot express.

One ``Connection`` carries one request at a time (keep-alive, Content-Length or chunked
bodies, read-until-close). Streaming responses hand their de-chunked body to a callback as
it arrives, which is what the SSE measurements need.

Load shapes:
- ``fixed_rate``: open loop at a fixed request rate; latency is measured from each request's
  *scheduled* send time, so a stall is not hidden by the generator waiting (no coordinated
  omission). The requests are evenly spaced to the microsecond (``Ticker``).
- ``chained``: closed loop, each connection builds its next request from its previous
  response (single-use refresh tokens, one code after another).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs


@attrs.define
class Response:
    """A complete (or, for a stream, started) response."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


class HTTPError(Exception):
    """The connection closed or sent something that is not HTTP/1.1."""


def build_request(
    method: str,
    target: str,
    host: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The bytes of one HTTP/1.1 request."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends and awaits one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.closed = asyncio.get_event_loop().create_future()
        self._done: asyncio.Future[Response] | None = None
        self._head_seen: asyncio.Future[Response] | None = None
        self._on_data: Callable[[bytes], None] | None = None
        self._response: Response | None = None
        self._mode = "head"  # head | length | chunked | close
        self._remaining = 0
        self._body = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._mode == "close" and self._response is not None:
            self._complete()
        for future in (self._head_seen, self._done):
            if future is not None and not future.done():
                future.set_exception(HTTPError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(
        self, raw: bytes, on_data: Callable[[bytes], None] | None = None
    ) -> tuple[asyncio.Future[Response], asyncio.Future[Response]]:
        """Send ``raw``; futures for (headers received, response complete).

        With ``on_data`` the body is handed over as it arrives instead of collected.
        """
        loop = asyncio.get_running_loop()
        self._head_seen = loop.create_future()
        self._done = loop.create_future()
        # a stream's caller may never await one of them: their errors must not warn at exit
        self._head_seen.add_done_callback(_retrieve)
        self._done.add_done_callback(_retrieve)
        self._on_data = on_data
        if self.transport is None or self.transport.is_closing():
            self._done.set_exception(HTTPError("connection closed"))
            self._head_seen.set_exception(HTTPError("connection closed"))
        else:
            self.transport.write(raw)
        return self._head_seen, self._done

    async def request(self, raw: bytes) -> Response:
        """Send ``raw`` and return the whole response."""
        return await self.send(raw)[1]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.buf:
            if self._mode == "head":
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._parse_head(bytes(self.buf[:end]))
                del self.buf[: end + 4]
            elif self._mode == "length":
                take = min(self._remaining, len(self.buf))
                self._deliver(bytes(self.buf[:take]))
                del self.buf[:take]
                self._remaining -= take
                if self._remaining == 0:
                    self._complete()
            elif self._mode == "chunked":
                if not self._chunked():
                    return
            elif self._mode == "close":
                self._deliver(bytes(self.buf))
                self.buf.clear()
            else:
                return

    def _chunked(self) -> bool:
        """Consume chunks off the buffer; False when more bytes are needed."""
        buf = self.buf
        while True:
            if self._remaining > 0:
                take = min(self._remaining, len(buf))
                if take == 0:
                    return False
                self._deliver(bytes(buf[:take]))
                del buf[:take]
                self._remaining -= take
                if self._remaining > 0:
                    return False
                self._remaining = -2  # the CRLF after the data
            if self._remaining == -2:
                if len(buf) < 2:
                    return False
                del buf[:2]
                self._remaining = 0
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(buf[:line_end]).split(b";", 1)[0], 16)
            del buf[: line_end + 2]
            if size == 0:
                # final chunk: skip trailers up to the empty line
                end = buf.find(b"\r\n")
                if end < 0:
                    buf[:0] = b"0\r\n"
                    return False
                del buf[: end + 2]
                self._complete()
                return True
            self._remaining = size

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, status, *_ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._response = Response(int(status), headers)
        self._body = bytearray()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            self._mode, self._remaining = "chunked", 0
        elif "content-length" in headers:
            self._mode, self._remaining = "length", int(headers["content-length"])
        elif int(status) in (204, 304) or 100 <= int(status) < 200:
            self._mode, self._remaining = "length", 0
        else:
            self._mode = "close"
        if self._head_seen is not None and not self._head_seen.done():
            self._head_seen.set_result(self._response)
        if self._mode == "length" and self._remaining == 0:
            self._complete()

    def _deliver(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)
        else:
            self._body += data

    def _complete(self) -> None:
        response, self._response = self._response, None
        self._mode = "head"
        if response is None:
            return
        response.body = bytes(self._body)
        if self._done is not None and not self._done.done():
            self._done.set_result(response)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _timespec(seconds: float) -> _Timespec:
    ns = int(seconds * 1e9)
    return _Timespec(ns // 10**9, ns % 10**9)


class Ticker:
    """Wakes an asyncio task at ``first`` and every ``interval`` seconds after, to the
    microsecond (a Linux timerfd; ``first`` is in ``loop.time()``, which is CLOCK_MONOTONIC).

    ``asyncio.sleep`` waits in ``epoll_wait``, whose timeout is whole milliseconds: at 2,700
    requests/s a 0.37 ms sleep lasts a millisecond and the requests leave in bursts of three,
    which a single-threaded proxy then serves one after the other. Measured on P1 at 2,700/s:
    p99 direct to the backend 1.4-1.6 ms with sleeps, 0.35-0.52 ms with this ticker. Where
    there is no timerfd (not Linux), it falls back to ``asyncio.sleep``.
    """

    def __init__(self, first: float, interval: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._fd = -1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
        except (AttributeError, OSError):
            return
        if fd < 0:
            return
        period, at = (_timespec(seconds) for seconds in (max(1e-6, interval), first))
        timer_abstime = 1
        if libc.timerfd_settime(fd, timer_abstime, ctypes.byref(_Itimerspec(period, at)), None):
            os.close(fd)
            return
        self._fd = fd
        self._loop.add_reader(fd, self._expired)

    async def wait(self, until: float) -> None:
        """Return at the next tick (the fallback: at the loop time ``until``)."""
        if self._fd < 0:
            await asyncio.sleep(max(0.0, until - self._loop.time()))
            return
        self._waiter = self._loop.create_future()
        await self._waiter

    def _expired(self) -> None:
        try:
            os.read(self._fd, 8)  # the number of expirations; we only need the wake-up
        except BlockingIOError:
            return
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1


@attrs.define
class RateResult:
    """An open-loop run: latencies (seconds) of the successful requests, and the failures."""

    rate: float
    sent: int
    ok: int
    failed: int
    latencies: list[float]

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": percentile(self.latencies, 0.50) * 1e3,
            "p90_ms": percentile(self.latencies, 0.90) * 1e3,
            "p99_ms": percentile(self.latencies, 0.99) * 1e3,
            "max_ms": max(self.latencies, default=float("nan")) * 1e3,
        }


async def fixed_rate(
    host: str,
    port: int,
    raw: bytes,
    rate: float,
    duration: float,
    connections: int = 16,
    warmup: float = 1.0,
) -> RateResult:
    """Send ``raw`` at ``rate`` requests/s over ``connections`` keep-alive connections.

    Requests of the first ``warmup`` seconds are sent but not recorded.
    """
    conns = [await Connection.open(host, port) for _ in range(connections)]
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    counts = {"ok": 0, "failed": 0}
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    record_from = start + warmup

    async def worker(conn: Connection) -> None:
        while True:
            scheduled = await queue.get()
            if scheduled is None:
                return
            try:
                response = await conn.request(raw)
                ok = 200 <= response.status < 300
            except HTTPError:
                ok = False
            if scheduled >= record_from:
                if ok:
                    counts["ok"] += 1
                    latencies.append(loop.time() - scheduled)
                else:
                    counts["failed"] += 1
            if not ok and conn.transport is not None and conn.transport.is_closing():
                return

    workers = [asyncio.ensure_future(worker(c)) for c in conns]
    total = int((warmup + duration) * rate)
    sent = 0
    interval = 1.0 / rate
    ticker = Ticker(start, interval)
    try:
        while sent < total:
            now = loop.time()
            # everything due by now goes out; the queue absorbs a late wake-up
            due = min(total, int((now - start) / interval) + 1)
            while sent < due:
                queue.put_nowait(start + sent * interval)
                sent += 1
            if sent < total:
                await ticker.wait(start + sent * interval)
    finally:
        ticker.close()
    for _ in conns:
        queue.put_nowait(None)
    await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
    for conn in conns:
        conn.close()
    return RateResult(rate, sent, counts["ok"], counts["failed"], latencies)


@attrs.define
class ChainResult:
    """A closed-loop run: completed requests, failures, elapsed seconds."""

    ok: int
    failed: int
    elapsed: float
    statuses: dict[int, int]
    first_failure: str | None = None

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0


# next_request(index, previous response or None) -> raw request bytes, or None to stop
NextRequest = Callable[[int, Response | None], bytes | None]


async def chained(
    host: str,
    port: int,
    next_request: NextRequest,
    connections: int,
    duration: float | None = None,
) -> ChainResult:
    """Closed loop: each connection sends ``next_request(i, last)`` until it returns None
    or ``duration`` seconds pass. A non-2xx response is counted and passed on."""
    conns = [await Connection.open(host, port) for _ in range(connections)]
    statuses: dict[int, int] = {}
    counts = {"ok": 0, "failed": 0}
    first_failure: list[str] = []
    start = time.perf_counter()
    deadline = start + duration if duration else None

    async def worker(index: int, conn: Connection) -> None:
        last: Response | None = None
        while True:
            # called with every response, also the last one: chains must see each successor
            raw = next_request(index, last)
            if raw is None or (deadline is not None and time.perf_counter() >= deadline):
                return
            try:
                last = await conn.request(raw)
            except HTTPError:
                counts["failed"] += 1
                return
            statuses[last.status] = statuses.get(last.status, 0) + 1
            if 200 <= last.status < 300:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                if not first_failure:
                    first_failure.append(f"{last.status} {last.body[:200]!r}")

    await asyncio.gather(*(worker(i, c) for i, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    return ChainResult(
        counts["ok"],
        counts["failed"],
        elapsed,
        statuses,
        first_failure[0] if first_failure else None,
    )
