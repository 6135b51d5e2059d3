"""SSE clients for P2 (events/s, per-event latency) and P4 (many idle streams + a broadcast)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import attrs
from httpclient import Connection, HTTPError, build_request, percentile

_STAMP = re.compile(rb'"t":(\d+)')


def stream_request(host: str, target: str, token: str | None) -> bytes:
    headers = {"Accept": "text/event-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return build_request("GET", target, host, headers)


async def throughput(
    host: str, port: int, path: str, token: str | None, count: int, size: int = 100
) -> dict[str, Any]:
    """Read ``count`` events as fast as they come; events/s from the headers to the last one."""
    conn = await Connection.open(host, port)
    seen = {"events": 0, "bytes": 0, "tail": b""}

    def on_data(data: bytes) -> None:
        # an event ends with a blank line; a boundary may split the "\n\n"
        seen["events"] += data.count(b"\n\n") + (
            1 if seen["tail"] == b"\n" and data[:1] == b"\n" else 0
        )
        seen["bytes"] += len(data)
        seen["tail"] = data[-1:]

    raw = stream_request(f"{host}:{port}", f"{path}?mode=stream&count={count}&size={size}", token)
    head, done = conn.send(raw, on_data)
    response = await asyncio.wait_for(head, 10)
    start = time.perf_counter()
    try:
        await asyncio.wait_for(done, 120)
    except HTTPError:
        pass  # a stream that ends by closing the connection
    elapsed = time.perf_counter() - start
    conn.close()
    return {
        "status": response.status,
        "events": seen["events"],
        "bytes": seen["bytes"],
        "seconds": elapsed,
        "events_per_s": seen["events"] / elapsed if elapsed else 0.0,
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
