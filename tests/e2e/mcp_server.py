"""A real MCP server (the ``mcp`` SDK's ``MCPServer``) for the end-to-end tests.

Run it as::

    python -m tests.e2e.mcp_server --port 9000 --transport streamable-http

It listens on 127.0.0.1 only and prints ``listening <endpoint URL>`` on stdout once it accepts
connections (``/mcp`` for streamable HTTP, ``/sse`` for the legacy SSE transport). With ``--port 0``
it picks a free port and the printed URL names it.

Tools:

- ``echo(text)`` returns ``text``;
- ``count(n, delay=0.05)`` sends ``n`` progress notifications, ``delay`` seconds apart, then
  returns ``"counted n"``;
- ``whoami()`` returns the ``Authorization`` and ``X-Upstream-Authorization`` headers of the HTTP
  request that carried the call (JSON object, ``null`` for an absent header).

The SDK's DNS-rebinding protection stays on, but strict: only ``Host: 127.0.0.1:<port>`` or
``localhost:<port>`` (this server's own address) is accepted, so a proxy that forwards its own
public Host header instead of the backend's gets the SDK's 421, as a real deployment would.
``--allow-any-host`` switches the check off for experiments.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from mcp.server.mcpserver import MCPServer

from authproxy import demo


def build_server() -> MCPServer:
    """The demo server's tools, with a count fast enough for tests."""
    return demo.build_server("authproxy-e2e-backend", count_delay=0.05)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point: the demo server's options, with the test tools."""
    parser_argv = list(argv if argv is not None else sys.argv[1:])
    if "--port" not in parser_argv:
        parser_argv = ["--port", "0", *parser_argv]
    demo.main(parser_argv, build=build_server)


if __name__ == "__main__":
    main(sys.argv[1:])
