"""RedisAddress: where the Redis storage connects, parsed from ``[storage].url``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from authproxy.http.tcp_endpoint import tcp_endpoint

# Seconds for one connection attempt (txredisapi retries with backoff after it).
_CONNECT_TIMEOUT = 5


@attrs.frozen
class RedisAddress:
    """``redis://host:port/db``, ``rediss://`` (TLS) or ``unix:///path?db=N``."""

    scheme: str
    host: str = ""
    port: int = 6379
    path: str = ""  # the unix socket
    db: int = 0

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """The address; ValueError saying what is wrong (one line)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ValueError(f"not a URL ({e})") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials (use password_file)")
        if parts.fragment:
            raise ValueError("must not have a #fragment")
        if parts.scheme == "unix":
            if parts.netloc or not parts.path.startswith("/"):
                raise ValueError("unix:// needs an absolute socket path (unix:///path)")
            query = parse_qs(parts.query)
            db = _db(query.get("db", ["0"])[-1])
            return cls("unix", path=parts.path, db=db)
        if not parts.hostname:
            raise ValueError("needs a host")
        if parts.query:
            raise ValueError("must not have a query (the database is the path: /0)")
        path = parts.path.strip("/")
        return cls(parts.scheme, host=parts.hostname, port=port or 6379, db=_db(path or "0"))


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f'the database must be a number, not "{text}"')
    return int(text)


def sentinel_address(text: str) -> tuple[str, int]:
    """``host:port`` of a Sentinel; ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'"{text}" is not host:port')
    return host.strip("[]"), int(port)


def redacted(url: str) -> str:
    """``url`` for an error message: anything before an ``@`` (credentials) replaced."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def client_endpoint(
    address: RedisAddress,
    reactor: Any,
    ca_pem: bytes | None = None,
    timeout: float = _CONNECT_TIMEOUT,
) -> Any:
    """The Twisted client endpoint that reaches ``address`` on ``reactor``.

    ``rediss://`` verifies the server's certificate for its host name against ``ca_pem``
    (a PEM CA certificate, ``[storage].ca_file``) or else the platform's trust store.
    """
    from twisted.internet import endpoints

    if address.scheme == "unix":
        return endpoints.UNIXClientEndpoint(reactor, address.path, timeout=_CONNECT_TIMEOUT)
    endpoint = tcp_endpoint(reactor, address.host, address.port, timeout)
    if not address.tls:
        return endpoint
    from twisted.internet.ssl import Certificate, optionsForClientTLS, platformTrust

    trust = Certificate.loadPEM(ca_pem) if ca_pem else platformTrust()
    return endpoints.wrapClientTLS(optionsForClientTLS(address.host, trustRoot=trust), endpoint)


def describe(address: RedisAddress) -> str:
    """Where ``address`` points, for log lines and ``/ready`` (it holds no credentials)."""
    if address.scheme == "unix":
        return f"unix:{address.path} db {address.db}"
    return f"{address.scheme}://{address.host}:{address.port}/{address.db}"
