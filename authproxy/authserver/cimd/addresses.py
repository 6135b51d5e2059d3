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
import threading
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authproxy.authserver.cimd.document import DocumentError, DocumentsBusy

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
        (getattr(address, "is_site_local", False), "a site-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _CGNAT, "a shared (CGNAT) address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "an address that is not public"),
    ):
        if refused:
            return words
    return None


#: the client is told the same whether a name does not resolve or resolves inside the
#: network: different words would let anyone probe which internal names exist
NOT_FETCHED = "the client_id URL's host does not resolve to a public address"


def vetted_address(addresses: Sequence[str], allow_loopback: bool, literal: bool = False) -> str:
    """The address to connect to: every one the name resolves to must be fetchable (an
    attacker's name may mix public and internal answers), else DocumentError. For a name,
    why is in its ``logged`` part only; an IP literal (``literal``) the client named
    itself, so it is told what kind of address that is."""
    if not addresses:
        raise DocumentError(NOT_FETCHED, logged="the name does not resolve", host_wide=True)
    for address in addresses:
        if (why := address_refusal(address, allow_loopback)) is None:
            continue
        if literal:
            raise DocumentError(f"the client_id URL's host is {why}, which is not fetched")
        raise DocumentError(NOT_FETCHED, logged=f"{address} is {why}", host_wide=True)
    return addresses[0]


def literal_address(host: str) -> str | None:
    """``host`` when it is an IP literal (nothing to resolve), else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses getaddrinfo gives ``host`` (blocking: call it in a thread)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in found))


#: threads resolving document host names; a name server that never answers holds one for
#: 20 s or more (glibc's timeout x attempts), and that must cost these threads only
RESOLVER_THREADS = 4
#: lookups running or queued at once, abandoned ones included: beyond, DocumentsBusy
MAX_PENDING_LOOKUPS = 16


def _daemon_thread(**kwargs: Any) -> threading.Thread:
    return threading.Thread(daemon=True, **kwargs)


class SystemResolver:
    """getaddrinfo (the system's resolver, ``/etc/hosts`` and all, as browsers use it) on a
    small thread pool of its own, never the reactor's.

    The reactor's shared pool resolves every ``HostnameEndpoint`` in the process (backends,
    the IdP, Redis by name); anyone can name a document host, so its lookups get their own
    ``threads``. A lookup holds its thread until getaddrinfo returns, even after its fetch
    gave up waiting, so it counts against ``max_pending`` until then: beyond that, a new
    lookup is refused at once (DocumentsBusy) instead of queueing behind the stuck ones.
    """

    def __init__(
        self,
        reactor: Any,
        lookup: Callable[[str, int], Sequence[str]] = system_lookup,
        threads: int = RESOLVER_THREADS,
        max_pending: int = MAX_PENDING_LOOKUPS,
    ) -> None:
        self._reactor = reactor
        self._lookup = lookup
        self._pool = ThreadPool(minthreads=0, maxthreads=threads, name="cimd-resolver")
        self._pool.threadFactory = _daemon_thread  # type: ignore[assignment]
        self._max_pending = max_pending
        self._pending = 0

    def __call__(self, host: str, port: int) -> Deferred[Sequence[str]]:
        if self._pending >= self._max_pending:
            return fail(DocumentsBusy(f"{self._pending} document host names are being resolved"))
        if not self._pool.started:
            self._pool.start()
            self._reactor.addSystemEventTrigger("during", "shutdown", self.stop)
        self._pending += 1
        answer: Deferred[Sequence[str]] = Deferred()  # cancelling it leaves the thread be

        def done(result: Sequence[str] | Failure) -> None:
            self._pending -= 1
            if answer.called:
                return  # abandoned by its caller
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)

        deferToThreadPool(self._reactor, self._pool, self._lookup, host, port).addBoth(done)
        return answer

    def stop(self) -> None:
        """Stop the pool's threads, unless a lookup still holds one: a stuck getaddrinfo
        must not hold up shutdown, and its daemon thread ends with the process."""
        if self._pool.started and self._pending == 0:
            self._pool.stop()


def threaded_resolver(
    reactor: Any,
    lookup: Callable[[str, int], Sequence[str]] = system_lookup,
    threads: int = RESOLVER_THREADS,
    max_pending: int = MAX_PENDING_LOOKUPS,
) -> SystemResolver:
    """The production ``Resolve``: :class:`SystemResolver` on ``reactor``."""
    return SystemResolver(reactor, lookup, threads, max_pending)
