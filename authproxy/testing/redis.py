"""A real ``redis-server`` for tests: on a free loopback port, in a temporary directory.

Tests that need it call :func:`redis_server_or_skip`; where ``redis-server`` is not
installed they skip, except when ``CI`` is set (``.ci/run`` installs it), where a missing
server fails: a broken install step must not hide behind a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any, cast

import attrs
from twisted.internet.defer import Deferred

from authproxy.storage.redis import resp

_START_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@attrs.define
class RedisServer:
    """One running ``redis-server`` owned by a test; :meth:`stop` ends it and its directory."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    persistence: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(
        cls,
        *,
        persistence: bool = False,
        port: int | None = None,
        directory: Path | None = None,
        replica_of: int = 0,
    ) -> RedisServer:
        """Start and wait until it answers PING. ``persistence`` turns on Redis's default
        snapshots and an append-only file (to test restarts); unit tests run without.
        ``directory`` (default: a new one) is where it keeps its files; ``replica_of``: the
        port of a master on 127.0.0.1 to replicate."""
        executable, directory, port = _prepare(port, directory)
        args = [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
        if persistence:
            args += ["--appendonly", "yes"]
        else:
            args += ["--save", "", "--appendonly", "no"]
        if replica_of:
            args += ["--replicaof", "127.0.0.1", str(replica_of)]
        return cls._spawn(args, directory, port, persistence)

    @classmethod
    def start_sentinel(cls, master: str, master_port: int) -> RedisServer:
        """A Redis Sentinel (``redis-server --sentinel``) watching ``master`` on
        127.0.0.1:``master_port``, alone (quorum 1), so ``SENTINEL failover`` works."""
        executable, directory, port = _prepare(None)
        conf = directory / "sentinel.conf"  # Sentinel rewrites it: it must be writable
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
            f"sentinel monitor {master} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {master} 1000\n"
            f"sentinel failover-timeout {master} 5000\n"
        )
        return cls._spawn([executable, str(conf), "--sentinel"], directory, port, False)

    def command(self, *words: str) -> Any:
        """One command, answered synchronously (for a test's setup and checks)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(resp.command(*words))
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"redis on port {self.port} closed the connection")
                data += chunk
                try:
                    return resp.parse_reply(data)[0]
                except resp.Incomplete:
                    continue

    @classmethod
    def _spawn(cls, args: list[str], directory: Path, port: int, persistence: bool) -> RedisServer:
        log = open(directory / "redis.log", "wb")  # noqa: SIM115 (the process keeps it)
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        server = cls(port, directory, process, persistence)
        deadline = time.monotonic() + _START_TIMEOUT
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                output = (directory / "redis.log").read_text(errors="replace")[-2000:]
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}:\n{output}")
            time.sleep(0.01)
        return server

    def stop(self, *, keep_directory: bool = False) -> None:
        """Terminate the server (and remove its directory unless ``keep_directory``)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if not keep_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def start_again(self) -> RedisServer:
        """After ``stop(keep_directory=True)`` (a clean shutdown, which writes its files): the
        server started again on the same port and directory, so with ``persistence`` it comes
        back with its data."""
        return RedisServer.start(
            persistence=self.persistence, port=self.port, directory=self.directory
        )


def _prepare(port: int | None, directory: Path | None = None) -> tuple[str, Path, int]:
    executable = shutil.which("redis-server")
    if executable is None:
        raise FileNotFoundError("redis-server is not installed")
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="authproxy-redis-"))
    return executable, directory, _free_port() if port is None else port


def redis_server_or_skip(**kwargs: Any) -> RedisServer:
    """A started :class:`RedisServer`; SkipTest when redis-server is missing outside CI."""
    if shutil.which("redis-server") is None:
        missing = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI"):
            raise AssertionError(missing)
        raise unittest.SkipTest(missing)
    return RedisServer.start(**kwargs)


def connect_redis(
    endpoint: Any,
    *,
    dbid: int = 0,
    password: str | None = None,
    poolsize: int = 1,
    reconnect: bool = True,
    reply_timeout: float | None = None,
) -> Deferred[Any]:
    """A txredisapi connection (pool) through ``endpoint``, fired once connected: how tests
    reach a Redis directly (the daemon connects through ``storage/redis/link.py``).

    The endpoint is the caller's (TCP, TLS or unix, on the reactor it chose): txredisapi's
    own helpers resolve host names in the reactor's thread pool on the global reactor.
    Numbers are never converted: records are strings and the scripts' replies are parsed
    where they are read.
    """
    from txredisapi import ConnectionHandler, RedisFactory

    from authproxy.storage.redis.protocol import storage_protocol

    factory = RedisFactory(
        repr(endpoint),
        dbid,
        poolsize,
        isLazy=False,
        handler=ConnectionHandler,
        password=password,
        replyTimeout=reply_timeout,
        convertNumbers=False,
    )
    factory.protocol = storage_protocol()
    factory.reconnect = reconnect
    factory.startConnecting(endpoint)
    return cast(Deferred[Any], factory.deferred)
