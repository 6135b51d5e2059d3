"""Header rules of the relay: hop-by-hop removal, Host, forwarding headers, cookies, Origin.

Everything not named here passes untouched in both directions (Mcp-Session-Id,
MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name, Mcp-Param-* and headers nobody
has invented yet), so the proxy never has to learn about new MCP headers.

Towards the backend, a header the backend might trust because "only authproxy sets it" is
never the client's:

- ``Authorization`` (the client's authproxy token) and the ``upstream_token.custom_header``
  (whatever the strategy: a client must not hand the backend an upstream token of its own)
  are dropped; authproxy sets them from the user's upstream session.
- The client address: ``X-Forwarded-For`` is authproxy's (the peer, appended to the
  client's chain only when the peer is a trusted proxy); ``X-Forwarded-Proto`` and
  ``X-Forwarded-Host`` are the client's only from a trusted proxy; ``X-Real-IP``,
  ``True-Client-IP`` and ``X-Client-IP`` never pass (one source of truth: X-Forwarded-For).
  ``Forwarded`` and any other ``X-Forwarded-*`` pass only from a trusted proxy.
- authproxy's own cookies (``authproxy-*``, ``__Host-authproxy-*``, ``__Secure-authproxy-*``:
  consent, CSRF and login binding) are removed from ``Cookie``; the others are kept.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.web.http_headers import Headers

from authproxy.http.responses import TrustedProxies

# RFC 9110 §7.6.1 connection-specific fields, plus the legacy Proxy-* ones.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Set by the proxy itself (or by the Agent) towards the backend; the client's values never pass.
_REQUEST_OWNED = frozenset(
    {
        b"host",
        b"authorization",
        b"content-length",
        b"expect",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
        b"true-client-ip",
        b"x-client-ip",
    }
)

# Cookie names authproxy sets in browsers (authserver/consent.py and the login binding).
_OWN_COOKIE_PREFIXES = (b"authproxy-", b"__host-authproxy-", b"__secure-authproxy-")


def request_owned(custom_header: str) -> frozenset[bytes]:
    """The request header names the client's values of never pass to the backend, given the
    configured ``upstream_token.custom_header``."""
    return _REQUEST_OWNED | {custom_header.lower().encode("ascii")}


def without_own_cookies(values: list[bytes]) -> list[bytes]:
    """``Cookie`` header values minus authproxy's own cookies; [] when none is left."""
    kept: list[bytes] = []
    for value in values:
        if b"authproxy-" not in value.lower():  # the common case: no parsing
            kept.append(value)
            continue
        pairs = [p.strip() for p in value.split(b";")]
        others = [p for p in pairs if p and not p.lower().startswith(_OWN_COOKIE_PREFIXES)]
        if others:
            kept.append(b"; ".join(others))
    return kept


def connection_tokens(values: Iterable[bytes]) -> frozenset[bytes]:
    """Header names listed in ``Connection`` ``values`` (hop-by-hop for this message only)."""
    names: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                names.add(token)
    return frozenset(names)


def end_to_end(headers: Headers, drop: Iterable[bytes] = ()) -> list[tuple[bytes, list[bytes]]]:
    """The end-to-end headers of ``headers`` (lower-case names) minus the names in ``drop``."""
    extra = connection_tokens(headers.getRawHeaders(b"connection", ())).union(drop)
    skip = HOP_BY_HOP | extra if extra else HOP_BY_HOP
    kept = []
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower not in skip and not lower.startswith(b"proxy-"):
            kept.append((lower, list(values)))
    return kept


def backend_request_headers(
    incoming: Headers,
    *,
    backend_host: bytes,
    peer: str | None,
    secure: bool,
    trusted: TrustedProxies,
    owned: frozenset[bytes] = _REQUEST_OWNED,
) -> Headers:
    """The headers to send to the backend for a client request with ``incoming`` headers.

    Hop-by-hop headers and the ``owned`` ones (``request_owned``) are dropped, and so are
    authproxy's cookies; Host names the backend; X-Forwarded-For/Proto/Host describe the
    client, extending a chain only when the peer is a trusted proxy (module docstring).
    """
    out = Headers()
    peer_trusted = trusted.trusts(peer)
    for name, values in end_to_end(incoming, owned):
        if name == b"cookie":
            values = without_own_cookies(values)
            if not values:
                continue
        elif name.startswith(b"x-forwarded-") and not peer_trusted:
            continue
        out.setRawHeaders(name, values)
    out.setRawHeaders(b"host", [backend_host])

    def first(name: bytes) -> bytes | None:
        values = incoming.getRawHeaders(name)
        return values[0] if values and peer_trusted else None

    chain = ", ".join(v.decode("latin-1") for v in incoming.getRawHeaders(b"x-forwarded-for", []))
    client = peer or "unknown"
    forwarded_for = f"{chain}, {client}" if peer_trusted and chain else client
    out.setRawHeaders(b"x-forwarded-for", [forwarded_for.encode("latin-1")])
    out.setRawHeaders(
        b"x-forwarded-proto", [first(b"x-forwarded-proto") or (b"https" if secure else b"http")]
    )
    own_host = incoming.getRawHeaders(b"host")
    host = first(b"x-forwarded-host") or (own_host[0] if own_host else None)
    if host:
        out.setRawHeaders(b"x-forwarded-host", [host])
    if peer_trusted:
        for value in incoming.getRawHeaders(b"forwarded", []):
            out.addRawHeader(b"forwarded", value)
    return out
