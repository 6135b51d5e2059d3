"""Resource URIs a scope rule may be matched against: only a spelling no parser rewrites.

A rule's glob matches the text of ``params.uri``, but backends look a resource up by what
their URL type makes of that text: the MCP Python SDK 1.x (pydantic's AnyUrl) and the
TypeScript SDK (``URL``) parse it the WHATWG way, which lower-cases the scheme and host,
resolves ``.``/``..`` segments (``%2e`` included), reads ``\\`` as ``/``, drops tabs and
newlines, ``file://localhost`` and default ports; RFC 3986 normalisers also decode
percent-encoded unreserved characters. ``file:///public/../private/x`` would pass a rule on
``file:///private/*`` and read the private file. So with scope rules, a resource URI must
already be in the one form they all agree on; anything else is refused (400), never
rewritten: a client sends the URI the server listed, which is canonical.
"""

from __future__ import annotations

import ipaddress
import re
import string

# RFC 3986's characters (unreserved, reserved, "%"): no space, control, backslash or
# non-ASCII text (an IRI is sent percent-encoded).
_URI_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_PERCENT = re.compile(r"%(..)?", re.DOTALL)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# The WHATWG special schemes and their default ports (file has none).
_SPECIAL = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21, "file": None}
_HOST = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*\.?")
# WHATWG "ends in a number": the host is read as an IPv4 address, in any of its notations.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not a canonical absolute URI (one that URL parsers leave as it is),
    or None when it is."""
    if not _URI_CHARACTERS.fullmatch(uri):
        return (
            "has a character a URI cannot hold (spaces, control characters, backslashes "
            "and non-ASCII text must be percent-encoded)"
        )
    scheme_match = _SCHEME.match(uri)
    if scheme_match is None:
        return "is not an absolute URI (it has no scheme)"
    scheme = scheme_match.group()[:-1]
    if scheme != scheme.lower():
        return "has an upper-case scheme"
    rest = uri[scheme_match.end() :]
    hierarchy = re.split(r"[?#]", rest, maxsplit=1)[0]
    authority = ""
    if hierarchy.startswith("//"):
        authority, slash, path = hierarchy[2:].partition("/")
        if (problem := _authority_problem(scheme, authority)) is not None:
            return problem
        path = slash + path
    elif scheme in _SPECIAL:
        return f"must start with {scheme}:// (a parser would add the //)"
    else:
        path = hierarchy
    if scheme in _SPECIAL and not path:
        return "has an empty path (write / after the host)"
    if (scheme == "file" and "//" in path) or (path.startswith("//") and not authority):
        return "has an empty path segment (//) that a parser would drop"
    if scheme in _SPECIAL and "'" in rest.partition("#")[0].partition("?")[2]:
        return "has ' in its query, which WHATWG parsers percent-encode (write %27)"
    for segment in path.split("/"):
        if segment.lower().replace("%2e", ".") in (".", ".."):
            return 'has a "." or ".." path segment'
    for escape in _PERCENT.finditer(uri):
        digits = escape.group(1)
        if digits is None or not all(c in string.hexdigits for c in digits):
            return 'has a "%" that starts no percent-encoded byte'
        byte = chr(int(digits, 16))
        if byte in _UNRESERVED or byte in "/\\":
            return f"has a percent-encoded {byte!r} (%{digits}): write the character itself"
    return None


def _authority_problem(scheme: str, authority: str) -> str | None:
    if "@" in authority:
        return "has userinfo (user@host)"
    host, port = authority, None
    colon, bracket = authority.rfind(":"), authority.rfind("]")
    if colon > bracket:
        host, port = authority[:colon], authority[colon + 1 :]
    if port is not None:
        if not _PORT.fullmatch(port) or int(port) > 65535:
            return f"has the port {port!r} (1-65535, no leading zeros)"
        if _SPECIAL.get(scheme) == int(port):
            return f"names {scheme}'s default port {port} (leave it out)"
    if not host:
        return None if scheme == "file" else "has no host"
    if scheme == "file" and host.lower() == "localhost":
        return "names localhost (write file:///...)"
    if host != host.lower():
        return "has an upper-case host"
    if host.startswith("["):
        return _ipv6_problem(host)
    if not _HOST.fullmatch(host):
        return "has a host that is not a DNS name or an IP address"
    if _NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        try:
            canonical = str(ipaddress.IPv4Address(host))
        except ValueError:
            canonical = None
        if canonical != host:
            return "has a host that is not an IPv4 address in dotted-decimal form"
    return None


def _ipv6_problem(host: str) -> str | None:
    text = host[1:-1] if host.endswith("]") else ""
    try:
        address = ipaddress.IPv6Address(text) if re.fullmatch(r"[0-9a-f:]+", text) else None
    except ValueError:
        address = None
    if address is None or address.compressed != text:
        return "has a host that is not an IPv6 address in compressed form (such as [::1])"
    return None
