"""Two authproxy replicas behind one public URL, sharing one real redis-server.

Both replicas run the same configuration (the same keys, HMAC secret, issuer and
``public_url``; ``[storage] type = "redis"`` on one Redis), differing only in the port they
listen on, as behind a load balancer. The balancer is the clients' HTTP transport
(:class:`Balancer`): a request for the public URL keeps its URL and ``Host`` and goes to
the replica the test routes it to, so a scenario can say "through A", "through B".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx2

from authproxy.testing.redis import RedisServer, redis_server_or_skip
from tests import processes as procs
from tests.e2e.harness import (
    Authproxy,
    KeyDirs,
    authproxy_sections,
    idp_client,
    write_config,
)

READY_WITHIN = 30.0  # seconds for a replica to answer /ready 200 again (reconnect backoff)


@attrs.define
class Balancer:
    """Routes requests for the public port to the replica named by ``target``.

    ``before[path]`` runs once, just before the first request for ``path`` is routed (to kill
    a replica in the middle of a login, say); it may change ``target``.
    """

    public_port: int
    ports: dict[str, int]
    target: str = "a"
    before: dict[str, Callable[[], None]] = attrs.Factory(dict)

    def transport(self) -> httpx2.AsyncBaseTransport:
        """A transport for one HTTP client (each client closes its own)."""
        return _Routed(self, httpx2.AsyncHTTPTransport())


class _Routed(httpx2.AsyncBaseTransport):
    def __init__(self, balancer: Balancer, inner: httpx2.AsyncBaseTransport) -> None:
        self.balancer = balancer
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        balancer = self.balancer
        if request.url.host == "127.0.0.1" and request.url.port == balancer.public_port:
            hook = balancer.before.pop(request.url.path, None)
            if hook is not None:
                hook()
            # A copy: the client keeps seeing the public URL (redirects, cookies, Origin);
            # the Host header was set from it when the request was built.
            request = httpx2.Request(
                request.method,
                request.url.copy_with(port=balancer.ports[balancer.target]),
                headers=request.headers,
                stream=request.stream,
                extensions=request.extensions,
            )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define
class Replicas:
    """The IdP, the MCP server, one Redis and replicas ``a`` and ``b`` of authproxy."""

    idp: procs.OIDCProvider
    backend: procs.MCPServerProcess
    keys: KeyDirs
    redis: RedisServer
    replicas: dict[str, Authproxy]
    balancer: Balancer

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.balancer.public_port}"

    @property
    def mcp_url(self) -> str:
        return self.public_url + "/mcp"

    def url(self, name: str) -> str:
        """Replica ``name``'s own address (for requests that bypass the balancer)."""
        return self.replicas[name].url

    def through(self, name: str) -> None:
        """Send the clients' next requests to replica ``name``."""
        self.balancer.target = name

    def ensure_running(self) -> None:
        """Start whatever an earlier scenario stopped or killed."""
        if self.redis.process.poll() is not None:
            self.redis = self.redis.start_again()
        for proxy in self.replicas.values():
            if proxy.process is None or not proxy.process.running:
                proxy.stop()
                proxy.start()
        wait_ready(self, *self.replicas)

    def stop(self) -> None:
        for proxy in self.replicas.values():
            proxy.stop()
        self.backend.stop()
        self.idp.stop()
        self.redis.stop()


def wait_ready(cluster: Replicas, *names: str, within: float = READY_WITHIN) -> None:
    """Poll each replica's /ready until it answers 200; AssertionError after ``within`` s."""
    deadline = time.monotonic() + within
    for name in names:
        while (status := httpx2.get(cluster.url(name) + "/ready").status_code) != 200:
            assert time.monotonic() < deadline, f"replica {name}: /ready {status}"
            time.sleep(0.1)


def start_replicas(root: Path) -> Replicas:
    """Start everything; both replicas ready, the balancer routing to ``a``."""
    ports = {"a": procs.free_port(), "b": procs.free_port()}
    balancer = Balancer(procs.free_port(), ports)
    public_url = f"http://127.0.0.1:{balancer.public_port}"
    started: list[RedisServer | procs.OIDCProvider | procs.MCPServerProcess] = []
    try:
        started.append(redis := redis_server_or_skip(persistence=True))
        started.append(idp := procs.start_oidc_provider([idp_client(public_url)], log_dir=root))
        started.append(backend := procs.start_mcp_server("streamable-http", log_dir=root))
    except BaseException:
        for process in started:
            process.stop()
        raise
    keys = KeyDirs.create(root)
    replicas: dict[str, Authproxy] = {}
    for name, port in ports.items():
        sections = authproxy_sections(
            root, port=port, public_url=public_url, idp=idp, backend=backend, keys=keys
        )
        sections["storage"] = {"type": "redis", "url": redis.url, "key_prefix": "e2e:"}
        # Every scenario registers a client from 127.0.0.1; the default 5/min would couple them.
        sections["auth_server"]["registration"] = {"rate": "60/min"}
        config = write_config(root / f"authproxy-{name}.toml", sections)
        replicas[name] = Authproxy(config, port, root)
    cluster = Replicas(idp, backend, keys, redis, replicas, balancer)
    try:
        for proxy in replicas.values():
            proxy.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
