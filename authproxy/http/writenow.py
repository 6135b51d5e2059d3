"""Bytes handed to the socket at once, when nothing is queued before them.

Twisted's ``transport.write`` queues bytes and sends them on the reactor's next iteration,
after every other ready socket was served, so under a burst each request (to the backend)
and each response (to the client) waited for all the others (benchmarks/README.md, P1).
``write_now`` sends on the socket of a plain TCP (or UNIX) transport whose buffer is empty
and gives whatever the kernel did not take to the transport, so nothing ever overtakes
queued bytes. TLS transports (their bytes must pass the TLS layer), connections being
closed or aborted, and the in-memory transports of tests always use ``transport.write``.

Both ends that write this way (the Site's channel, the backend client) also turn Nagle's
algorithm off with ``no_delay``.

Measured with benchmarks/ab.py (1,900 requests/s open loop, both directions): CPU per
request 315-337 -> 261-294 µs, p50 0.85-0.91 -> 0.72-0.78 ms, p99 lower, the same
throughput under wrk.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off: messages are written whole, and it would only hold back
    the next one. A no-op for transports without the option (UNIX, in-memory)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, through its socket at once when that is safe."""
    sock = _idle_socket(transport)
    if sock is not None:
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # the transport meets the failure on its own write
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def _idle_socket(transport: Any) -> socket.socket | None:
    """The socket of a plain TCP (or UNIX) transport with nothing queued; else None.

    Reads the transport's buffer fields (``dataBuffer``, ``offset``, ``_tempDataLen``) and
    ``_aborting``: there is no public way to ask whether bytes are queued or the connection
    is being aborted.
    """
    if not isinstance(transport, tcp.Connection) or getattr(transport, "TLS", True):
        return None
    if not transport.connected or transport.disconnecting or getattr(transport, "_aborting", True):
        return None
    queued = getattr(transport, "_tempDataLen", 1) or getattr(transport, "offset", 0) != len(
        getattr(transport, "dataBuffer", b"?")
    )
    sock = getattr(transport, "socket", None)
    return sock if not queued and isinstance(sock, socket.socket) else None
