"""RedisAddress: where the Redis storage connects, parsed from ``[storage].url``."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs


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
