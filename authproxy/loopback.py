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
