"""Reference for P1's latency: a server with authproxy's capacity and nothing else.

A single-threaded Twisted protocol that answers every HTTP/1.1 request with the backend's
JSON-RPC result after a fixed amount of Python work (``--work`` loop iterations). The
harness sets the amount so that its max rate under wrk matches authproxy's, then measures
it at the same open-loop rate as authproxy. Whatever p99 it adds is what any one-core
Python server that busy adds on this machine. No backend hop, and the request parsing of
``backend.py``: if anything, an optimistic reference.

The work is a count of iterations, not a time: on this machine the same work costs more
CPU time per request at half load than at full load (the reference's own figures:
132 µs per request under wrk, 183-197 µs at fixed rates), and a server that waited out a
fixed time would hide that.

Usage: ``python benchmarks/busy_responder.py --port PORT --work ITERATIONS``.
"""

from __future__ import annotations

import argparse

from backend import RESULT, next_request, response
from twisted.internet import reactor
from twisted.internet.protocol import Protocol, ServerFactory

ANSWER = response(b"200 OK", RESULT, b"application/json", keep_alive=True)


def work(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


class BusyResponder(Protocol):
    iterations = 0  # of work() per request

    def connectionMade(self) -> None:
        self._buffer = b""
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while (request := next_request(self._buffer)) is not None:
            self._buffer = self._buffer[request[-1] :]
            work(self.iterations)
            self.transport.write(ANSWER)  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--work", type=int, default=0, help="loop iterations per request")
    options = parser.parse_args()
    BusyResponder.iterations = options.work
    factory = ServerFactory.forProtocol(BusyResponder)
    factory.noisy = False
    reactor.listenTCP(options.port, factory, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined,arg-type]
    reactor.callWhenRunning(print, f"listening {options.port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
