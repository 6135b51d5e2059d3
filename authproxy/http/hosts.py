"""The Host header check: authproxy answers only for the names it is published under.

A DNS rebinding attack points a name the attacker controls at authproxy's address, so a
page of the attacker's origin can call it from a victim's browser: the request then
carries the attacker's name in ``Host``. authproxy serves only ``server.public_url``'s host
and ``server.allowed_hosts`` (any port: rebinding is about names), plus every loopback
name when ``public_url`` is itself on loopback (a rebinding attack against a loopback
server uses a foreign name, never ``localhost``). Others get ``421 Misdirected Request``
(RFC 9110 §15.5.20: this server will not produce an authoritative answer for that URI).
``allowed_hosts = ["*"]`` turns the check off.

Whatever the names, the request must say which one it means exactly once (RFC 9112 §3.2):
several ``Host`` headers, or none in HTTP/1.1, get ``400``; so does a target that is not
origin-form (``/path``): an absolute-form target (``http://other/path``) names the
authority that RFC 9112 §3.2.2 says replaces ``Host``. authproxy is no forward proxy and
its clients send origin-form, so it refuses absolute-form rather than route on a second
name. A ``Host`` value is ``name``, ``name:port``, ``[IPv6]`` or ``[IPv6]:port`` with a
numeric port; anything else names no host this server answers for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from authproxy.http.errors import JSONError
from authproxy.http.loopback import is_loopback_host

ANY_HOST = "*"


def host_name(value: bytes) -> bytes | None:
    """The name in a ``Host`` value, without its port (an IPv6 literal without brackets);
    None when the value is not ``name[:port]`` or ``[IPv6][:port]``."""
    if value.startswith(b"["):
        name, closed, rest = value[1:].partition(b"]")
        if not closed or b":" not in name:  # an IPv6 literal has colons, a name none
            return None
    else:
        name, colon, port = value.rpartition(b":")
        if not colon:
            return value
        if b":" in name:  # an unbracketed IPv6 literal
            return None
        rest = colon + port
    if rest and not (rest.startswith(b":") and rest[1:].isdigit()):
        return None
    return name


def framing_error(uri: bytes, version: bytes, values: Sequence[bytes] | None) -> JSONError | None:
    """The ``400`` for a request that does not name exactly one host in the one place
    RFC 9112 §3.2 allows (see the module docstring), else None."""
    if values is not None and len(values) > 1:
        return _bad_request("send exactly one Host header (RFC 9112 section 3.2)")
    if values is None and version == b"HTTP/1.1":
        return _bad_request("an HTTP/1.1 request must send a Host header (RFC 9112 section 3.2)")
    if not uri.startswith(b"/"):
        return _bad_request("send the request target in origin-form (a path starting with /)")
    return None


def _bad_request(description: str) -> JSONError:
    return JSONError(400, "invalid_request", description, {"Cache-Control": "no-store"})


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
        if name is None:
            return False
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
