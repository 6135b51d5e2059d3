"""Redirect URIs read the way browsers read them, or refused.

A redirect URI decides where the authorization code goes, and a browser follows it with the
WHATWG URL parser, which reads some inputs differently from ``urllib.parse``: in http(s)
URLs ``\\`` is a path separator (``http://evil.example\\@127.0.0.1/`` is evil.example), tabs
and newlines are silently removed, and ``127.1``, ``2130706433``, ``0x7f000001`` and
``0177.0.0.1`` are all 127.0.0.1. Rather than reimplement that parser, this module accepts
only URIs on which both readings agree and refuses everything else:

- printable ASCII only (no whitespace, tab, newline or other control character), no ``\\``,
  no fragment, no userinfo (``@`` in the authority);
- http and https: ``scheme://host[:port][/path][?query]`` where the host is a DNS name
  (ASCII letters, digits, ``-`` and ``_``; lowercased as browsers do; no trailing dot and no
  numeric last label, which browsers read as IPv4), a dotted-decimal IPv4 address as
  browsers write it, or a bracketed IPv6 address as browsers write it (IPv4-mapped refused);
  the port, if any, is 1-65535 without leading zeros;
- private-use schemes of native apps (RFC 8252 §7.1, ``com.example.app:/cb``,
  ``cursor://...``) are opened by an application on this device; other special schemes of the
  WHATWG standard and schemes a browser would run itself are refused.

Every place a redirect URI is checked or shown uses :func:`parse_redirect_uri`: registration
(:func:`check_redirect_uri`), matching at ``/oauth/authorize`` (:func:`redirect_uri_matches`)
and the consent page (``pages.redirect_target``).
"""

from __future__ import annotations

import ipaddress
import re

import attrs

from authproxy.http.loopback import is_loopback_host

WEB_SCHEMES = ("http", "https")
# Schemes a browser runs or reads itself instead of handing to an app, and the other WHATWG
# "special" schemes, whose host rules differ from a private-use scheme's.
REFUSED_SCHEMES = frozenset(
    {"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "view-source"}
    | {"ws", "wss", "ftp"}
)

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]*")
_DNS_NAME = re.compile(r"[a-z0-9_\-]+(?:\.[a-z0-9_\-]+)*")
# WHATWG "ends in a number": such a host is parsed as IPv4, whatever its other labels.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


class InvalidRedirectURI(ValueError):
    """The URI cannot be a redirect URI; the message says why."""


@attrs.frozen
class RedirectURI:
    """A redirect URI as a browser reads it.

    ``host`` is lowercase, IPv6 without brackets; for a private-use scheme it is the
    authority (possibly empty) and ``rest`` is what follows it.
    """

    scheme: str
    host: str
    port: int | None
    rest: str

    @property
    def is_web(self) -> bool:
        """Whether a browser fetches it (http, https) rather than handing it to an app."""
        return self.scheme in WEB_SCHEMES

    @property
    def is_loopback(self) -> bool:
        """Whether an http(s) URI leads to this computer (``localhost``, 127/8, ``::1``)."""
        return self.is_web and is_loopback_host(self.host)

    @property
    def origin(self) -> tuple[str, str, int | None]:
        """(scheme, host, port) with the scheme's default port filled in: one web site."""
        default = {"https": 443, "http": 80}.get(self.scheme)
        return self.scheme, self.host, self.port or default

    @property
    def shown_host(self) -> str:
        """The host (and port) the way an address bar shows it."""
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port is None else f"{shown}:{self.port}"


def parse_redirect_uri(uri: str) -> RedirectURI:
    """``uri`` as a browser reads it; InvalidRedirectURI when browsers and Python might
    disagree on it, or it cannot be a redirect URI at all."""
    if not _PRINTABLE_ASCII.fullmatch(uri):
        raise InvalidRedirectURI(
            "a redirect URI must be printable ASCII, without whitespace or control characters "
            "(percent-encode anything else)"
        )
    if "\\" in uri:
        raise InvalidRedirectURI("a redirect URI must not contain a backslash")
    if "#" in uri:
        raise InvalidRedirectURI("a redirect URI must not have a fragment")
    scheme, colon, after = uri.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme):
        raise InvalidRedirectURI("a redirect URI must be absolute (start with a scheme)")
    scheme = scheme.lower()
    if scheme in REFUSED_SCHEMES:
        raise InvalidRedirectURI(f"the {scheme}: scheme cannot be used for redirect URIs")
    if scheme in WEB_SCHEMES:
        return _parse_web(scheme, after)
    return _parse_private_use(scheme, after)


def _split_authority(after_scheme: str) -> tuple[str, str]:
    """(authority, rest) of what follows ``scheme://``."""
    end = len(after_scheme)
    for delimiter in "/?":
        found = after_scheme.find(delimiter)
        if found != -1:
            end = min(end, found)
    return after_scheme[:end], after_scheme[end:]


def _parse_web(scheme: str, after: str) -> RedirectURI:
    # Browsers skip any run of slashes after "http:"; accept exactly the two both agree on.
    if not after.startswith("//") or after.startswith("///"):
        raise InvalidRedirectURI(f"a {scheme} redirect URI must start with {scheme}://host")
    authority, rest = _split_authority(after[2:])
    if "@" in authority:
        raise InvalidRedirectURI("a redirect URI must not contain userinfo (user@host)")
    if "%" in authority:
        raise InvalidRedirectURI("a redirect URI's host must not be percent-encoded")
    host, port = _split_port(authority)
    return RedirectURI(scheme, _canonical_host(host), port, rest)


def _split_port(authority: str) -> tuple[str, int | None]:
    bracket = authority.rfind("]")
    colon = authority.rfind(":")
    if colon <= bracket:
        return authority, None
    host, port = authority[:colon], authority[colon + 1 :]
    if not _PORT.fullmatch(port) or int(port) > 65535:
        raise InvalidRedirectURI(f"a redirect URI's port must be 1-65535, not {port!r}")
    return host, int(port)


def _canonical_host(host: str) -> str:
    """The host as browsers read it, when that is unambiguous; InvalidRedirectURI otherwise."""
    if not host:
        raise InvalidRedirectURI("a redirect URI must name a host")
    if host.startswith("["):
        return _canonical_ipv6(host)
    name = host.lower()  # the one change browsers make to an ASCII name
    if not _DNS_NAME.fullmatch(name):
        raise InvalidRedirectURI(f"{host} is not a host name browsers read unambiguously")
    if _NUMERIC_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        # Browsers read it as an IPv4 address (in any of several notations): only the usual
        # dotted-decimal form is accepted, so that everyone agrees which address it is.
        try:
            canonical = str(ipaddress.IPv4Address(name))
        except ValueError:
            canonical = None
        if canonical != name:
            raise InvalidRedirectURI(
                f"{host} is not an IPv4 address in dotted-decimal form (such as 127.0.0.1)"
            )
    return name


def _canonical_ipv6(host: str) -> str:
    text = host[1:-1].lower() if host.endswith("]") else ""
    try:
        address = ipaddress.IPv6Address(text) if re.fullmatch(r"[0-9a-f:]+", text) else None
    except ValueError:
        address = None
    if address is None or address.compressed != text or address.ipv4_mapped is not None:
        raise InvalidRedirectURI(
            f"{host} is not an IPv6 address in the form browsers write it (such as [::1])"
        )
    return text


def _parse_private_use(scheme: str, after: str) -> RedirectURI:
    authority, rest = "", after
    if after.startswith("//"):
        authority, rest = _split_authority(after[2:])
        if "@" in authority:
            raise InvalidRedirectURI("a redirect URI must not contain userinfo (user@host)")
    elif "." not in scheme and not after.partition("?")[0]:
        # A private-use scheme must at least name something to open.
        raise InvalidRedirectURI(f"{scheme}:{after} is not a usable redirect URI")
    return RedirectURI(scheme, authority.lower(), None, rest)


def check_redirect_uri(uri: object, max_length: int) -> str | None:
    """Why ``uri`` cannot be registered as a redirect URI, or None when it can.

    https anywhere; plain http only on loopback (RFC 8252 §7.3: the browser hands the code to
    an app on this computer); private-use schemes of native apps.
    """
    if not isinstance(uri, str) or not uri:
        return "each redirect URI must be a non-empty string"
    if len(uri) > max_length:
        return f"a redirect URI is longer than {max_length} characters"
    try:
        parsed = parse_redirect_uri(uri)
    except InvalidRedirectURI as e:
        return f"{_clip(uri)}: {e}"
    if parsed.scheme == "http" and not parsed.is_loopback:
        return f"{_clip(uri)} uses http on a host that is not loopback (use https)"
    return None


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Whether ``requested`` is the registered redirect URI: the same string, except that an
    http loopback URI matches on any port (RFC 8252 §7.3).

    The requested URI must itself be valid (an entry registered before a rule tightened
    is not followed). Only the port may differ: scheme, host (``localhost`` and
    ``127.0.0.1`` are different hosts), path and query must be identical.
    """
    try:
        req = parse_redirect_uri(requested)
    except InvalidRedirectURI:
        return False
    if registered == requested:
        return True
    try:
        reg = parse_redirect_uri(registered)
    except InvalidRedirectURI:
        return False
    return (
        reg.scheme == req.scheme == "http"
        and reg.is_loopback
        and reg.host == req.host
        and reg.rest == req.rest
    )


def _clip(uri: str, limit: int = 200) -> str:
    """Enough of a URI to recognise it in an error message."""
    return uri if len(uri) <= limit else uri[:limit] + "..."
