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

import argparse
import socket
import sys
from collections.abc import Sequence

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def build_server() -> MCPServer:
    """The MCP server with the test tools ``echo``, ``count`` and ``whoami``."""
    server = MCPServer(name="authproxy-e2e-backend", version="1.0")

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Send n progress notifications, delay seconds apart.")
    async def count(n: int, ctx: Context, delay: float = 0.05) -> str:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i} of {n}")
            if delay > 0:
                await anyio.sleep(delay)
        return f"counted {n}"

    @server.tool(description="The authorization headers this server received with the call.")
    def whoami(ctx: Context) -> dict[str, str | None]:
        # ctx.headers are the headers of the HTTP request that carried this tools/call (the POST
        # on both transports), read from the Starlette request the transport attached.
        headers = ctx.headers or {}
        return {
            "authorization": headers.get("authorization"),
            "x_upstream_authorization": headers.get("x-upstream-authorization"),
        }

    return server


def transport_security(port: int, allow_any_host: bool) -> TransportSecuritySettings:
    """DNS rebinding protection accepting only this server's own loopback Host."""
    if allow_any_host:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}"],
        allowed_origins=LOOPBACK_ORIGINS,
    )


async def serve(port: int, transport: str, path: str | None, allow_any_host: bool) -> None:
    """Serve the test MCP server on 127.0.0.1 until SIGTERM/SIGINT."""
    # Bind first so that the Host check and the printed URL know the real port (also for 0).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    security = transport_security(port, allow_any_host)
    server = build_server()
    if transport == "sse":
        path = path or "/sse"
        app = server.sse_app(sse_path=path, transport_security=security)
    else:
        path = path or "/mcp"
        app = server.streamable_http_app(streamable_http_path=path, transport_security=security)
    config = uvicorn.Config(
        app,
        log_level="info",
        # Open SSE streams must not hold up a SIGTERM for long.
        timeout_graceful_shutdown=1,
    )
    uv = uvicorn.Server(config)

    async def announce() -> None:
        while not uv.started:
            await anyio.sleep(0.01)
        print(f"listening http://127.0.0.1:{port}{path}", flush=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        await uv.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--transport", choices=["streamable-http", "sse"], default="streamable-http"
    )
    parser.add_argument("--path", default=None, help="endpoint path (default /mcp or /sse)")
    parser.add_argument(
        "--allow-any-host", action="store_true", help="switch off the SDK's Host/Origin check"
    )
    args = parser.parse_args(argv)
    anyio.run(serve, args.port, args.transport, args.path, args.allow_any_host)


if __name__ == "__main__":
    main(sys.argv[1:])
