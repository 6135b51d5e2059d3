"""The Host header check: authproxy answers only for the names it is published under.

A DNS rebinding attack points a name the attacker controls at authproxy's address, so a
page of the attacker's origin can call it from a victim's browser: the request then
carries the attacker's name in ``Host``. authproxy serves only ``server.public_url``'s host
and ``server.allowed_hosts`` (any port: rebinding is about names), plus every loopback
name when ``public_url`` is itself on loopback (a rebinding attack against a loopback
server uses a foreign name, never ``localhost``). Others get ``421 Misdirected Request``
(RFC 9110 §15.5.20: this server will not produce an authoritative answer for that URI).
``allowed_hosts = ["*"]`` turns the check off.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from authproxy.http.errors import JSONError
from authproxy.http.loopback import is_loopback_host

ANY_HOST = "*"


def host_name(value: bytes) -> bytes:
    """The name in a ``Host`` value, without its port (an IPv6 literal without brackets)."""
    if value.startswith(b"["):
        return value[1:].partition(b"]")[0]
    return value.rpartition(b":")[0] if b":" in value else value


class ServedHosts:
    """Which ``Host`` values this server answers for."""

    def __init__(self, public_url: str, allowed_hosts: Iterable[str] = ()) -> None:
        parts = urlsplit(public_url)
        allowed = [h.lower() for h in allowed_hosts]
        self.any = ANY_HOST in allowed
        self._loopback = is_loopback_host(parts.hostname)
        public = (parts.hostname or "").lower()
        self._names = frozenset(h.encode("utf-8") for h in (public, *allowed) if h != ANY_HOST)
        # the exact Host values a client of public_url sends: one set lookup on the hot path
        self._exact = frozenset({parts.netloc.lower().encode("utf-8"), *self._names})

    def permits(self, value: bytes | None) -> bool:
        """Whether a request with this ``Host`` (None: none sent) is answered."""
        if self.any:
            return True
        if value is None:
            return False
        value = value.lower()
        if value in self._exact:
            return True
        name = host_name(value)
        if name in self._names:
            return True
        return self._loopback and is_loopback_host(name.decode("latin-1"))


def misdirected(value: bytes | None) -> JSONError:
    """The 421 for a request naming a host this server does not answer for."""
    shown = "no Host" if value is None else value[:100].decode("latin-1")
    return JSONError(
        421,
        "misdirected_request",
        f"this server does not answer for {shown!r}; use its public URL",
        {"Cache-Control": "no-store"},
    )
