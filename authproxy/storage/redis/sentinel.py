"""SentinelMasterEndpoint: every connection goes to the master Redis Sentinel names now.

A client endpoint, so RedisLink and the revocation feed use it exactly like a fixed
address: their reconnect (with backoff) calls ``connect`` again, and that rediscovers. So
after a failover (the old master's connections are killed by Sentinel, or a write answers
``READONLY`` and the link drops the connection) service continues on the new master.

Each ``connect``:

1. asks the sentinels in order ``SENTINEL get-master-addr-by-name <master>``, each within
   ``timeout`` seconds; one that is down, slow, or does not know the master is skipped;
2. connects to the address named (TLS and its CA as the url says: the certificate is
   verified for that address, host name or IP, as the sentinel announces it);
3. sends ``AUTH`` (with a password) and ``ROLE`` on that connection, and hands it to the
   caller's protocol only if the node says ``master``: a just-demoted master, still named
   by a sentinel that has not noticed, answers ``slave``, and the attempt fails (the caller
   retries, rediscovering).

Sentinels are asked over plain TCP without a password (sentinel ACLs are not supported).
txredisapi's own ``Sentinel`` is not used: it asks every sentinel at once on the global
reactor through HostnameEndpoint, and checks the role inside its protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from authproxy.http.tcp_endpoint import tcp_endpoint
from authproxy.storage.redis.resp import RespError, RespExchange, RespExchangeFactory, command
from authproxy.storage.redis.url import RedisAddress, client_endpoint


class MasterNotFound(Exception):
    """No sentinel named a reachable master (the message says what each one answered)."""


@implementer(IStreamClientEndpoint)
class SentinelMasterEndpoint:
    """Connects to the current master ``master`` as the ``sentinels`` (host, port) name it.

    ``tls`` and ``ca_pem`` apply to the data nodes, as for ``client_endpoint``;
    ``password`` authenticates the ``ROLE`` check (and is never logged or shown).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        sentinels: Sequence[tuple[str, int]],
        master: str,
        *,
        tls: bool = False,
        ca_pem: bytes | None = None,
        password: str | None = None,
        timeout: float = 2.0,
    ) -> None:
        if not sentinels:
            raise ValueError("at least one sentinel is needed")
        self._reactor = reactor
        self.sentinels = tuple(sentinels)
        self.master = master
        self._scheme = "rediss" if tls else "redis"
        self._ca_pem = ca_pem
        self._password = password
        self.timeout = timeout
        self._named: tuple[str, int] | None = None  # the address last named, for the log

    def __repr__(self) -> str:
        where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"<SentinelMasterEndpoint {self.master} via {where}>"

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> IProtocol:
        host, port = await self.discover()
        address = RedisAddress(self._scheme, host=host, port=port)
        checks = [command("ROLE")]
        if self._password is not None:
            checks.insert(0, command("AUTH", self._password))
        endpoint = client_endpoint(address, self._reactor, self._ca_pem)
        exchange: RespExchange = await endpoint.connect(RespExchangeFactory(checks))
        replies = await exchange.replies.addTimeout(self.timeout, self._reactor)
        refused = next((r for r in replies if isinstance(r, RespError)), None)
        role = replies[-1][0] if isinstance(replies[-1], list) and replies[-1] else None
        if refused is not None or role != b"master":
            exchange.transport.loseConnection()  # type: ignore[union-attr]
            why = f"answered {refused}" if refused else f"says it is a {_text(role)}, not a master"
            raise MasterNotFound(f"{host}:{port}, named master {self.master!r}, {why}")
        inner = exchange.hand_over(factory)
        if inner is None:
            raise MasterNotFound(f"no protocol for the connection to {host}:{port}")
        return inner

    async def discover(self) -> tuple[str, int]:
        """The master's (host, port) as the first sentinel that knows it says."""
        answers = []
        for host, port in self.sentinels:
            try:
                reply = await self._ask(host, port)
            except CancelledError:
                raise
            except Exception as e:
                answers.append(f"{host}:{port} {_failure(e)}")
                continue
            named = _address(reply)
            if named is not None:
                if named != self._named:
                    self.log.info(
                        "Sentinel {sentinel} names {host}:{port} as master {master}",
                        sentinel=f"{host}:{port}",
                        host=named[0],
                        port=named[1],
                        master=self.master,
                    )
                    self._named = named
                return named
            knows = "does not know it" if reply is None else f"answered {_text(reply)}"
            answers.append(f"{host}:{port} {knows}")
        found = MasterNotFound(f"no sentinel named master {self.master!r}: " + "; ".join(answers))
        self.log.warn("Storage: {why}", why=found)
        raise found

    def _ask(self, host: str, port: int) -> Deferred[Any]:
        endpoint = tcp_endpoint(self._reactor, host, port, timeout=self.timeout)
        ask = RespExchangeFactory([command("SENTINEL", "get-master-addr-by-name", self.master)])

        def reply(exchange: RespExchange) -> Deferred[list[Any]]:
            return exchange.replies.addBoth(_closing(exchange))

        d: Deferred[Any] = endpoint.connect(ask).addCallback(reply)
        return d.addCallback(lambda replies: replies[0]).addTimeout(self.timeout, self._reactor)


def _closing(exchange: RespExchange) -> Any:
    def close(result: Any) -> Any:
        if exchange.transport is not None:
            exchange.transport.loseConnection()
        return result

    return close


def _address(reply: Any) -> tuple[str, int] | None:
    """(host, port) from a get-master-addr-by-name reply; None for anything else."""
    if not (isinstance(reply, list) and len(reply) == 2):
        return None
    host, port = reply
    if not (isinstance(host, bytes) and isinstance(port, bytes) and port.isdigit()):
        return None
    return host.decode(errors="replace"), int(port)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "nothing" if value is None else str(value)


def _failure(error: Exception) -> str:
    from twisted.internet.defer import TimeoutError

    if isinstance(error, TimeoutError):
        return "did not answer in time"
    return str(error) or type(error).__name__
