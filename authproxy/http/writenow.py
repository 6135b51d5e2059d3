"""Bytes handed to the socket at once, when nothing is queued before them.

Twisted's ``transport.write`` queues bytes and sends them on the reactor's next iteration,
after every other ready socket was served, so under a burst each request (to the backend)
and each response (to the client) waits for all the others.
``write_now`` sends on the socket of a plain TCP (or UNIX) transport whose buffer is empty
and gives whatever the kernel did not take to the transport, so nothing ever overtakes
queued bytes. TLS transports (their bytes must pass the TLS layer), connections being
closed or aborted, and the in-memory transports of tests always use ``transport.write``
(whether a transport is idle is a question about Twisted's internals: tcp_internals.py).

Both ends that write this way (the Site's channel, the backend client) also turn Nagle's
algorithm off with ``no_delay``.
"""

from __future__ import annotations

from typing import Any

from authproxy.http.tcp_internals import idle_socket


def no_delay(transport: Any) -> None:
    """Turn Nagle's algorithm off: messages are written whole, and it would only hold back
    the next one. A no-op for transports without the option (UNIX, in-memory)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


def write_now(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, through its socket at once when that is safe."""
    sock = idle_socket(transport)
    if sock is not None:
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # the transport meets the failure on its own write
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
