"""ResponseChannel: a response leaves in one piece and at once, never ahead of queued bytes.

Real loopback sockets and the real reactor: the resource looks at the client's socket from
inside ``render``, i.e. before the reactor could have flushed anything.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from authproxy.http.channel import ResponseChannel
from authproxy.http.request import LimitedRequest
from authproxy.http.site import AuthproxySite


class Scripted(Resource):
    """Renders with ``script(request)``; what the script returns is the render result."""

    isLeaf = True

    def __init__(self, script: Callable[[Request], Any]) -> None:
        super().__init__()
        self.script = script

    def render(self, request: Request) -> Any:
        return self.script(request)


def pending(sock: socket.socket) -> bytes:
    """What the client socket holds right now (non-blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.setblocking(True)


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    data = b""
    while data.count(marker) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class OnTheWireAtOnce(TestCase):
    def serve(self, script: Callable[[Request], Any]) -> socket.socket:
        site = AuthproxySite(Scripted(script), requestFactory=LimitedRequest)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        client.settimeout(10)
        self.addCleanup(client.close)
        return client

    async def test_head_and_body_sent_before_render_returns(self) -> None:
        seen: Deferred[bytes] = Deferred()

        def script(request: Request) -> Any:
            request.setHeader(b"content-type", b"text/plain")
            request.setHeader(b"content-length", b"5")
            request.write(b"hello")
            request.finish()
            seen.callback(pending(client))
            return NOT_DONE_YET

        client = self.serve(script)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await seen
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nhello"), response)

    async def test_stream_head_goes_before_the_first_event(self) -> None:
        seen: Deferred[tuple[bytes, bytes]] = Deferred()

        def script(request: Request) -> Any:
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(b"")  # the head now: the first event may be minutes away
            head = pending(client)
            request.write(b"data: 1\n\n")
            event = pending(client)
            request.finish()
            seen.callback((head, event))
            return NOT_DONE_YET

        client = self.serve(script)
        client.sendall(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
        head, event = await seen
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK\r\n"), head)
        self.assertTrue(head.endswith(b"\r\n\r\n"), head)
        self.assertIn(b"transfer-encoding: chunked", head.lower())
        self.assertEqual(event, b"9\r\ndata: 1\n\n\r\n")
        self.assertEqual(
            await threads.deferToThread(read_until, client, b"0\r\n\r\n"), b"0\r\n\r\n"
        )

    async def test_queued_bytes_are_never_overtaken(self) -> None:
        def script(request: Request) -> bytes:
            # a write straight to the transport stays queued until the reactor runs again
            assert request.channel is not None
            request.channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.setHeader(b"content-length", b"2")
            return b"ok"

        client = self.serve(script)
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = await threads.deferToThread(read_until, client, b"\r\n\r\n", 2)
        data += await threads.deferToThread(
            lambda: client.recv(2) if not data.endswith(b"ok") else b""
        )
        self.assertTrue(data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), data)
        self.assertTrue(data.endswith(b"\r\n\r\nok"), data)

    async def test_bodiless_and_pipelined_responses_complete_in_order(self) -> None:
        def script(request: Request) -> bytes:
            if request.path == b"/empty":
                request.setResponseCode(204)
                return b""
            request.setHeader(b"content-length", b"3")
            return b"one" if request.path == b"/1" else b"two"

        client = self.serve(script)
        client.sendall(
            b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /2 HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = await threads.deferToThread(read_until, client, b"HTTP/1.1 ", 4)
        data += await threads.deferToThread(
            lambda: b"" if data.endswith(b"two") else read_until(client, b"two")
        )
        statuses = re.findall(rb"HTTP/1\.1 \d{3} [^\r]*", data)
        self.assertEqual(
            statuses,
            [
                b"HTTP/1.1 200 OK",
                b"HTTP/1.1 204 No Content",
                b"HTTP/1.1 200 OK",
                b"HTTP/1.1 200 OK",
            ],
        )
        self.assertEqual(data.count(b"two"), 1)  # HEAD sent no body
        self.assertTrue(data.endswith(b"\r\n\r\ntwo"), data)


class InMemoryTransport(SynchronousTestCase):
    def test_head_and_body_reach_the_transport_together(self) -> None:
        def script(request: Request) -> bytes:
            request.setHeader(b"content-length", b"2")
            return b"ok"

        # a Clock: the channel's idle timeout must not land on the global reactor
        site = AuthproxySite(Scripted(script), requestFactory=LimitedRequest, reactor=Clock())
        channel = site.buildProtocol(None)
        self.assertIsInstance(channel, ResponseChannel)
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        response = transport.value()
        self.assertTrue(response.startswith(b"HTTP/1.1 200 OK\r\n"), response)
        self.assertTrue(response.endswith(b"\r\n\r\nok"), response)

    def test_local_address_is_asked_of_the_transport_once(self) -> None:
        seen: list[Any] = []

        def script(request: Request) -> bytes:
            seen.append((request.getHost(), request.isSecure()))
            return b"ok"

        site = AuthproxySite(Scripted(script), requestFactory=LimitedRequest, reactor=Clock())
        channel = site.buildProtocol(None)
        transport = StringTransport()
        asked: list[int] = []
        get_host = transport.getHost
        transport.getHost = lambda: asked.append(1) or get_host()  # type: ignore[method-assign]
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(len(seen), 2, transport.value())
        self.assertEqual(seen[0], seen[1])
        self.assertFalse(seen[0][1])
        self.assertEqual(len(asked), 1)
