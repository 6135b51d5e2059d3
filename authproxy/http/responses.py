"""Small HTTP helpers shared by every Resource: JSON bodies, response headers, source keys.

Error responses are not made here: resources raise an ``HTTPError`` (http/errors.py).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode

import attrs
from twisted.web.server import Request

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def add_query(uri: str, params: Mapping[str, str | None]) -> str:
    """``uri`` with ``params`` appended to its query (None values left out)."""
    base, _, fragment = uri.partition("#")
    query = urlencode({k: v for k, v in params.items() if v is not None})
    if not query:
        return uri
    joined = base + ("&" if "?" in base else "?") + query
    return joined + ("#" + fragment if fragment else "")


def set_headers(request: Request, headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        request.setHeader(name, value)


def json_body(
    request: Request,
    status: int,
    payload: Any,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """Set status and JSON content type on ``request`` and return the encoded body."""
    request.setResponseCode(status)
    request.setHeader("Content-Type", "application/json")
    if headers:
        set_headers(request, headers)
    return json.dumps(payload, separators=(",", ":")).encode("utf-8")


def ip_address_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address (without a zone index), or None when it is not one: the one
    test of which peers and X-Forwarded-For hops count as addresses."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def source_key(address: str) -> str:
    """What a source address is counted under by every per-source limit: IPv4 as is, IPv6 by its /64 network.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, a dual-stack listener) counts as the
    IPv4 address it carries. Anything that is not an IP address (a UNIX socket) is its own key.
    """
    ip = ip_address_of(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@attrs.frozen
class TrustedProxies:
    """The CIDRs whose X-Forwarded-* headers are believed (proxy and rate limits alike)."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def trusts(self, host: str | None) -> bool:
        address = ip_address_of(host) if host and self.networks else None
        if address is None:
            return False
        candidates: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (address,)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A dual-stack listener's IPv4 peer is also the IPv4 address it carries.
            candidates = (address, address.ipv4_mapped)
        return any(a in network for a in candidates for network in self.networks)


#: Trusting nobody: every X-Forwarded-* header is the client's own.
NO_TRUSTED_PROXIES = TrustedProxies(())


def redirect(request: Request, location: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A 302 to ``location`` that no cache keeps and that leaks no Referer."""
    request.setResponseCode(302)
    request.setHeader("Location", location)
    request.setHeader("Referrer-Policy", "no-referrer")
    set_headers(request, NO_STORE)
    if headers:
        set_headers(request, headers)
    request.setHeader("Content-Type", "text/plain; charset=utf-8")
    return b""
