"""Does the host of an http(s) URL accept TCP connections? Connect, then hang up at once.

Two things ask: ``/ready`` about a supervised backend (every second), and a login about the
IdP before the browser is sent there. An opened connection is the whole answer: nothing is
sent, so a probe costs the server an accept and nothing more.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol

from authproxy.http.tcp_endpoint import tcp_endpoint


def url_host_port(url: str) -> tuple[str, int]:
    """The host (``""`` if the URL names none) and port (the scheme's default if unnamed)."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def accepts_connections(reactor: Any, host: str, port: int, timeout: float) -> Deferred[bool]:
    """Fires with whether a TCP connection to ``host:port`` opened within ``timeout`` seconds.

    Never fails: a refusal, a timeout or a name that does not resolve are all ``False``.
    """
    factory = Factory.forProtocol(Protocol)
    factory.noisy = False  # a probe a second would flood the log with factory starts
    connecting = tcp_endpoint(reactor, host, port, timeout).connect(factory)
    return connecting.addCallbacks(_hang_up, lambda _: False)


def _hang_up(protocol: Protocol) -> bool:
    if protocol.transport is not None:
        protocol.transport.loseConnection()
    return True
