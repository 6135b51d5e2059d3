"""The one place authproxy reads private state of Twisted's TCP transport.

``write_now`` (writenow.py) hands bytes to the socket at once instead of queueing them for
the reactor's next iteration, and that is only correct when nothing is queued before them
and the connection is not being aborted. Twisted has no public way to ask either question,
so this module reads ``twisted.internet.tcp.Connection``'s buffer fields (``dataBuffer``,
``offset``, ``_tempDataLen``), ``_aborting`` and ``socket``. Every read has a default that
means "not idle", so if a Twisted release renames them authproxy stays correct and only
loses the fast path; tests/test_tcp_internals.py checks them on a real loopback connection
so such an upgrade fails loudly instead of getting silently slower.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp

#: The private attributes read below, each on a connected ``tcp.Connection``.
PRIVATE_FIELDS = ("dataBuffer", "offset", "_tempDataLen", "_aborting", "socket")


def idle_socket(transport: Any) -> socket.socket | None:
    """The socket of a plain TCP (or UNIX) transport with nothing queued; else None.

    TLS transports (their bytes must pass the TLS layer), connections being closed or
    aborted, and anything that is not a ``tcp.Connection`` (the in-memory transports of
    tests) answer None.
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
