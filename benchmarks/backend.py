"""A minimal, fast HTTP/1.1 backend for the benchmarks (plain asyncio protocol, no framework).

It stands in for an MCP server and must never be the bottleneck, so it does the least work
that is still honest HTTP: keep-alive, Content-Length or chunked bodies, HTTP/1.0 with
``Connection: close`` (what ``twisted.web.proxy.ReverseProxyResource`` speaks).

Routes (any path; the query string selects the behaviour):

- ``POST ...``                      a small JSON-RPC result (P1, P5)
- ``GET ...?mode=stream&count=N``   N SSE events of ``size`` bytes, as fast as the reader takes
                                    them, one write per event (P2 throughput)
- ``GET ...?mode=paced&rate=R&count=N``  N events at R events/s, each stamped with
                                    ``time.monotonic_ns()`` at send time (P2 latency)
- ``GET ...?mode=idle``             an SSE stream that stays open, silent, until a broadcast (P4)
- ``POST /control/broadcast``       one event to every idle stream; answers how many got it
- ``GET /control/stats``            ``{"idle": open idle streams}``
- ``GET /health``                   200

Usage: ``python benchmarks/backend.py --port PORT`` (prints ``listening PORT`` when ready).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from urllib.parse import parse_qs

RESULT = b'{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}'
EVENT_SIZE = 100
_IDLE: set[BackendProtocol] = set()


def sse_event(payload: bytes, size: int) -> bytes:
    """``data: <payload><padding>\\n\\n`` padded with spaces to exactly ``size`` bytes."""
    head = b"data: " + payload
    pad = size - len(head) - 2
    return head + b" " * max(pad, 0) + b"\n\n"


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def response(status: bytes, body: bytes, content_type: bytes, keep_alive: bool) -> bytes:
    """A whole response with Content-Length."""
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\nContent-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n" if keep_alive else b"\r\nConnection: close\r\n",
            b"\r\n",
            body,
        )
    )


def next_request(buf: bytes | bytearray) -> tuple[str, str, str, dict[str, str], int] | None:
    """The first whole request in ``buf``: method, target, version, headers (lower-case
    names) and its size in bytes with the body; None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    size = end + 4 + int(headers.get("content-length", "0"))
    if len(buf) < size:
        return None
    return method, target, version, headers, size


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class BackendProtocol(asyncio.Protocol):
    """One connection: parse requests off the buffer, answer each."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.streaming = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.can_write.set()
        _IDLE.discard(self)

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.streaming:
            request = next_request(self.buf)
            if request is None:
                return
            method, target, version, headers, size = request
            del self.buf[:size]
            connection = headers.get("connection", "").lower()
            keep_alive = (
                "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
            )
            self.handle(method, target, keep_alive)

    def handle(self, method: str, target: str, keep_alive: bool) -> None:
        assert self.transport is not None
        path, _, query = target.partition("?")
        if path == "/control/broadcast":
            count = broadcast()
            body = json.dumps({"sent": count}).encode()
            self.transport.write(response(b"200 OK", body, b"application/json", keep_alive))
        elif path == "/control/stats":
            body = json.dumps({"idle": len(_IDLE)}).encode()
            self.transport.write(response(b"200 OK", body, b"application/json", keep_alive))
        elif method == "POST":
            self.transport.write(response(b"200 OK", RESULT, b"application/json", keep_alive))
        elif method == "GET" and query:
            args = {k: v[0] for k, v in parse_qs(query).items()}
            self.streaming = True
            mode = args.get("mode", "stream")
            self.transport.write(SSE_HEAD)
            if mode == "idle":
                # a comment, so the client sees the stream open end to end
                self.transport.write(chunk(b": open\n\n"))
                _IDLE.add(self)
                return
            size = int(args.get("size", EVENT_SIZE))
            count = int(args.get("count", "1000"))
            if mode == "paced":
                asyncio.ensure_future(self.paced(float(args.get("rate", "1000")), count, size))
            else:
                asyncio.ensure_future(self.stream(count, size))
            return
        elif method == "GET":
            self.transport.write(response(b"200 OK", b'{"status":"ok"}', b"application/json", True))
        else:
            self.transport.write(response(b"405 Method Not Allowed", b"", b"text/plain", False))
            keep_alive = False
        if not keep_alive:
            self.transport.close()

    async def stream(self, count: int, size: int) -> None:
        assert self.transport is not None
        event = chunk(sse_event(b"x", size))
        write = self.transport.write
        sent = 0
        while sent < count and not self.closed:
            if not self.can_write.is_set():
                await self.can_write.wait()
                continue
            # one write per event, like a real server flushing each event as it is produced
            write(event)
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)
        self.finish()

    async def paced(self, rate: float, count: int, size: int) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = 1.0 / rate
        for i in range(count):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.closed:
                return
            stamp = b'{"seq":%d,"t":%d}' % (i, time.monotonic_ns())
            self.transport.write(chunk(sse_event(stamp, size)))  # type: ignore[union-attr]
        self.finish()

    def finish(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
            self.streaming = False
            self.transport.close()


def broadcast() -> int:
    """Send one event to every idle stream; how many it went to."""
    event = chunk(sse_event(b'{"broadcast":true}', EVENT_SIZE))
    streams = list(_IDLE)
    for stream in streams:
        if stream.transport is not None and not stream.closed:
            stream.transport.write(event)
    return len(streams)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(BackendProtocol, "127.0.0.1", port, backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args()
    asyncio.run(serve(options.port))


if __name__ == "__main__":
    main()
