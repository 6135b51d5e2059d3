"""Loopback: the one definition used for http-allowed URLs, redirect URIs and dev-mode listens.

``localhost``, 127.0.0.0/8 and ::1 (RFC 8252 §8.3, and what browsers treat as potentially
trustworthy). Nothing else: not 0.0.0.0, not private ranges.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a name or an IP literal, without brackets) is loopback."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    """Whether ``url``'s host is loopback."""
    return is_loopback_host(urlsplit(url).hostname)


def listen_is_loopback(description: str) -> bool:
    """Whether a server endpoint string only accepts local connections (loopback or UNIX)."""
    positional, options = _split_description(description)
    kind = positional[0].lower() if positional else ""
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    interface = options.get("interface")
    if interface is None and kind in ("tcp", "tcp6") and len(positional) > 2:
        interface = positional[2]  # tcp:PORT:INTERFACE
    return is_loopback_host(interface)


def _split_description(description: str) -> tuple[list[str], dict[str, str]]:
    """Twisted endpoint-string syntax: ``:``-separated, ``\\`` escapes, ``key=value`` options."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    positional = [p for p in parts if "=" not in p]
    options = dict(p.split("=", 1) for p in parts if "=" in p)
    return positional, options
