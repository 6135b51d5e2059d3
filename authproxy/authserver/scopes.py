"""OAuth scope strings (RFC 6749 §3.3): space-separated, order kept, each scope once."""

from __future__ import annotations


def split_scope(value: str) -> tuple[str, ...]:
    """A scope string as a de-duplicated tuple, order kept."""
    return tuple(dict.fromkeys(value.split()))
