"""SSE clients for P2 (events/s, per-event latency) and P4 (many idle streams + a broadcast)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import attrs
from httpclient import Connection, HTTPError, _retrieve, build_request, percentile

_STAMP = re.compile(rb'"t":(\d+)')


def stream_request(host: str, target: str, token: str | None) -> bytes:
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return build_request("GET", target, host, headers)


class _EventCounter(asyncio.Protocol):
    r"""Counts the events of one chunked SSE response without de-chunking it.

    The throughput reader shares core 1 with the backend, so it must cost little per read:
    through a proxy the events arrive in smaller reads than straight from the backend, and a
    reader that parsed every chunk made core 1, not the proxy, the limit of P2 (backend ~60 %
    + reader ~40 % of core 1 at ~110,000 events/s, authproxy at 70 % of core 0). Chunk
    framing never holds a blank line (each of its "\n" follows a "\r") and event data holds
    no "\r", so each "\n\n" of the raw body ends one event, and "\r\n0\r\n\r\n" is the
    last chunk.
    """

    _LAST_CHUNK = b"\r\n0\r\n\r\n"

    def __init__(self, request: bytes) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[int] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.done.add_done_callback(_retrieve)  # awaited only once the head arrived
        self.request = request
        self.buffer = b""
        self.events = 0
        self.bytes = 0
        self.tail = b"\r\n"  # the body starts like a chunk boundary: "0\r\n\r\n" ends it too
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.head.done():
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.buffer[:end], self.buffer[end + 4 :]
            self.buffer = b""
            if b"transfer-encoding: chunked" not in head.lower():
                self.head.set_exception(HTTPError("the stream is not chunked"))
                return
            self.head.set_result(int(head.split(b" ", 2)[1]))
        self.events += data.count(b"\n\n") + (self.tail[-1:] == b"\n" and data[:1] == b"\n")
        self.bytes += len(data)
        self.tail = (self.tail + data)[-len(self._LAST_CHUNK) :]
        if self.tail == self._LAST_CHUNK and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.head, self.done):
            if not future.done():
                future.set_exception(HTTPError("connection closed"))


async def throughput(
    host: str, port: int, path: str, token: str | None, count: int, size: int = 100
) -> dict[str, Any]:
    """Read ``count`` events as fast as they come; events/s from the headers to the last one."""
    raw = stream_request(f"{host}:{port}", f"{path}?mode=stream&count={count}&size={size}", token)
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(lambda: _EventCounter(raw), host, port)
    status = await asyncio.wait_for(reader.head, 10)
    start = time.perf_counter()
    try:
        await asyncio.wait_for(reader.done, 120)
    except HTTPError:
        pass  # counted as a short stream below
    elapsed = time.perf_counter() - start
    if reader.transport is not None:
        reader.transport.close()
    return {
        "status": status,
        "events": reader.events,
        "bytes": reader.bytes,
        "seconds": elapsed,
        "events_per_s": reader.events / elapsed if elapsed else 0.0,
    }


async def latency(
    host: str, port: int, path: str, token: str | None, rate: float, count: int, size: int = 100
) -> dict[str, Any]:
    """Events paced at ``rate``/s, each stamped by the backend; delay from stamp to receipt."""
    conn = await Connection.open(host, port)
    delays: list[float] = []
    pending = bytearray()

    def on_data(data: bytes) -> None:
        now = time.monotonic_ns()
        pending.extend(data)
        end = pending.rfind(b"\n\n")
        if end < 0:
            return
        for stamp in _STAMP.findall(pending, 0, end):
            delays.append((now - int(stamp)) / 1e9)
        del pending[: end + 2]

    target = f"{path}?mode=paced&rate={rate}&count={count}&size={size}"
    head, done = conn.send(stream_request(f"{host}:{port}", target, token), on_data)
    response = await asyncio.wait_for(head, 10)
    try:
        await asyncio.wait_for(done, count / rate + 30)
    except HTTPError:
        pass
    conn.close()
    # the first second is warm-up (connection setup, first allocations)
    recorded = delays[int(rate) :] if len(delays) > 2 * rate else delays
    return {
        "status": response.status,
        "events": len(delays),
        "p50_ms": percentile(recorded, 0.50) * 1e3,
        "p99_ms": percentile(recorded, 0.99) * 1e3,
        "max_ms": max(recorded, default=float("nan")) * 1e3,
    }


@attrs.define
class IdleStreams:
    """Many open SSE streams waiting for one broadcast event each."""

    opened: int = 0
    failed: int = 0
    received: int = 0
    statuses: dict[int, int] = attrs.Factory(dict)
    conns: list[Connection] = attrs.Factory(list)
    all_received: asyncio.Event = attrs.Factory(asyncio.Event)
    expected: int = 0

    async def open(
        self, host: str, port: int, path: str, token: str | None, n: int, parallel: int = 50
    ) -> None:
        """Open ``n`` streams, ``parallel`` connection attempts at a time."""
        self.expected = n
        raw = stream_request(f"{host}:{port}", f"{path}?mode=idle", token)
        gate = asyncio.Semaphore(parallel)

        async def one() -> None:
            async with gate:
                try:
                    conn = await Connection.open(host, port)
                except OSError:
                    self.failed += 1
                    return
                got = {"open": False, "event": False}
                first_data: asyncio.Future[None] = asyncio.get_running_loop().create_future()

                def on_data(data: bytes, got: dict[str, bool] = got) -> None:
                    if not first_data.done():
                        first_data.set_result(None)
                    if not got["event"] and b"broadcast" in data:
                        got["event"] = True
                        self.received += 1
                        if self.received >= self.expected:
                            self.all_received.set()

                head, _ = conn.send(raw, on_data)
                try:
                    response = await asyncio.wait_for(head, 30)
                    self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
                    if response.status != 200:
                        self.failed += 1
                        conn.close()
                        return
                    # the backend's opening comment made it through the proxy
                    await asyncio.wait_for(first_data, 30)
                except (TimeoutError, HTTPError):
                    self.failed += 1
                    conn.close()
                    return
                self.opened += 1
                self.conns.append(conn)

        await asyncio.gather(*(one() for _ in range(n)))

    async def wait_broadcast(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.all_received.wait(), timeout)
        except TimeoutError:
            pass

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
