"""The network addresses a metadata document may be fetched from (SSRF protection).

Anyone can make authproxy fetch a URL by naming it as client_id, so the host is resolved
here (not by the HTTP client) and the connection goes to the vetted address only: a name
that resolves to an address inside the network, or that changes its answer between a check
and the connection (DNS rebinding), cannot reach an internal service. Refused: loopback,
private (RFC 1918, ULA), link-local, shared (CGNAT, 100.64/10), multicast, unspecified,
reserved and every other non-global address, also when wrapped in IPv6 (IPv4-mapped,
NAT64, 6to4, Teredo). ``allow_loopback`` admits loopback only, never the other classes.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from authproxy.authserver.cimd.document import DocumentError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> the addresses it resolves to (IP literals as text)
Resolve = Callable[[str, int], Deferred[Sequence[str]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to the network, if it carries one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_refusal(text: str, allow_loopback: bool) -> str | None:
    """Why a document may not be fetched from address ``text``, or None when it may."""
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return "an address that is not an IP address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            address = embedded
    if address.is_loopback:
        return None if allow_loopback else "a loopback address"
    for refused, words in (
        (address.is_unspecified, "an unspecified address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _CGNAT, "a shared (CGNAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "an address that is not public"),
    ):
        if refused:
            return words
    return None


def vetted_address(addresses: Sequence[str], allow_loopback: bool) -> str:
    """The address to connect to: every one the name resolves to must be fetchable (an
    attacker's name may mix public and internal answers), else DocumentError."""
    if not addresses:
        raise DocumentError("the client_id URL's host name does not resolve")
    for address in addresses:
        if (why := address_refusal(address, allow_loopback)) is not None:
            raise DocumentError(f"the client_id URL's host is {why}, which is not fetched")
    return addresses[0]


def literal_address(host: str) -> str | None:
    """``host`` when it is an IP literal (nothing to resolve), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def threaded_resolver(reactor: Any) -> Resolve:
    """getaddrinfo in the reactor's thread pool: the system's resolver, as browsers use it."""

    def lookup(host: str, port: int) -> list[str]:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in found))

    def resolve(host: str, port: int) -> Deferred[Sequence[str]]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), lookup, host, port)

    return resolve
