"""A small MCP server for trying authproxy (``pip install '.[demo]'``).

``etc/demo.toml`` has authproxy start it as its supervised backend::

    python -m authproxy.demo --port 9000 --transport streamable-http

Tools: ``echo`` (returns its text), ``count`` (streams progress notifications, so you can
watch them arrive live through the proxy), and ``whoami`` (what the backend received in
place of the client's token: authproxy never forwards its own JWT).

It listens on 127.0.0.1 and keeps the MCP SDK's DNS-rebinding protection on, accepting
only its own loopback ``Host``: authproxy rewrites ``Host`` to the backend's, as a proxy in
front of an SDK server must.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings

LOOPBACK_ORIGINS = ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"]


def build_server(name: str = "authproxy-demo", count_delay: float = 0.5) -> MCPServer:
    """The demo MCP server (the end-to-end tests run it too, with a shorter count delay)."""
    server = MCPServer(name=name, version="1.0")

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Count to n, reporting progress after each step.")
    async def count(n: int, ctx: Context, delay: float = count_delay) -> str:
        for i in range(1, n + 1):
            await ctx.report_progress(i, n, f"step {i} of {n}")
            if delay > 0:
                await anyio.sleep(delay)
        return f"counted {n}"

    @server.tool(description="What this server received in place of the client's token.")
    def whoami(ctx: Context) -> dict[str, str | None]:
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


async def serve(
    build: Callable[[], MCPServer],
    port: int,
    transport: str,
    path: str | None = None,
    allow_any_host: bool = False,
) -> None:
    """Serve ``build()`` on 127.0.0.1 until SIGTERM/SIGINT; print ``listening <url>`` when up."""
    # Bind first so that the Host check and the printed URL know the real port (also for 0).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    security = transport_security(port, allow_any_host)
    server = build()
    app: Any
    if transport == "sse":
        path = path or "/sse"
        app = server.sse_app(sse_path=path, transport_security=security)
    else:
        path = path or "/mcp"
        app = server.streamable_http_app(streamable_http_path=path, transport_security=security)
    # Open SSE streams must not hold up a SIGTERM for long.
    uv = uvicorn.Server(uvicorn.Config(app, log_level="info", timeout_graceful_shutdown=1))

    async def announce() -> None:
        while not uv.started:
            await anyio.sleep(0.01)
        print(f"listening http://127.0.0.1:{port}{path}", flush=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(announce)
        await uv.serve(sockets=[sock])
        tg.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None, build: Callable[[], MCPServer] = build_server) -> None:
    """Command line entry point (also used by the end-to-end test server)."""
    parser = argparse.ArgumentParser(description="Serve an MCP server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=9000, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--transport", choices=["streamable-http", "sse"], default="streamable-http"
    )
    parser.add_argument("--path", default=None, help="endpoint path (default /mcp or /sse)")
    parser.add_argument(
        "--allow-any-host", action="store_true", help="switch off the SDK's Host/Origin check"
    )
    args = parser.parse_args(argv)
    anyio.run(serve, build, args.port, args.transport, args.path, args.allow_any_host)


if __name__ == "__main__":
    main(sys.argv[1:])
