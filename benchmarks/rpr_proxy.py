"""Baseline: the same backend through ``twisted.web.proxy.ReverseProxyResource``.

What a Twisted user gets from the standard library: a new HTTP/1.0 connection to the backend
per request, the whole response buffered. No token check: a pure proxy.

Usage: ``python benchmarks/rpr_proxy.py --port PORT --backend-port PORT``.
"""

from __future__ import annotations

import argparse

from twisted.internet import reactor
from twisted.web.proxy import ReverseProxyResource
from twisted.web.server import Site


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend-port", type=int, required=True)
    options = parser.parse_args()
    root = ReverseProxyResource("127.0.0.1", options.backend_port, b"")
    site = Site(root)
    site.noisy = False
    reactor.listenTCP(options.port, site, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined]
    reactor.callWhenRunning(print, f"listening {options.port}", flush=True)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
