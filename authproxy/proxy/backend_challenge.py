"""The backend's ``WWW-Authenticate`` after a 401, read only to decide whether to replay.

A 401 with a ``Bearer`` challenge is the backend's authentication layer refusing the
upstream token. Such a refusal of a safe or idempotent request (RFC 9110 §9.2) may be
replayed with a refreshed token. Anything else (a POST, whose JSON-RPC call may have acted)
is replayed only when the challenge says ``error="invalid_token"`` (RFC 6750 §3.1): the
token was refused before the request was looked at. A 401 without a Bearer challenge is an
application's own answer and is never replayed. The challenge itself never reaches the
client (proxy/resource.py).
"""

from __future__ import annotations

import re

#: Safe or idempotent methods (RFC 9110 §9.2.1, §9.2.2): a replay cannot act twice.
IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE"})

# A quoted string, a token (or token68, stray "=" included), "=", or ",".
_ITEM = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,="]+)|(=)|(,))')


def bearer_errors(values: list[bytes]) -> list[str | None]:
    """The ``error`` parameter of each ``Bearer`` challenge in ``values`` (None: no error
    parameter); an empty list when there is no Bearer challenge (RFC 9110 §11.6.1)."""
    items: list[tuple[str, str]] = []
    for value in values:
        text = value.decode("latin-1")
        for m in _ITEM.finditer(text):
            quoted, token, equals, comma = m.groups()
            if quoted is not None:
                items.append(("quoted", quoted))
            elif token is not None:
                items.append(("token", token))
            elif equals is not None:
                items.append(("=", "="))
            elif comma is not None:
                items.append((",", ","))
        items.append((",", ","))  # header values are separate lists
    found: list[str | None] = []
    in_bearer = False
    i = 0
    while i < len(items):
        kind, text = items[i]
        following = items[i + 1][0] if i + 1 < len(items) else ","
        if kind == "token" and following == "=":  # an auth-param: name = value
            param = items[i + 2] if i + 2 < len(items) else (",", "")
            if in_bearer and text.lower() == "error" and param[0] in ("token", "quoted"):
                found[-1] = param[1]
            i += 3
        elif kind == "token" and (i == 0 or items[i - 1][0] == ","):  # an auth-scheme
            in_bearer = text.lower() == "bearer"
            if in_bearer:
                found.append(None)
            i += 1
        else:
            i += 1
    return found


def replayable(method: bytes, challenges: list[bytes]) -> bool:
    """Whether a request the backend refused with ``challenges`` may be replayed once."""
    errors = bearer_errors(challenges)
    if not errors:
        return False
    return method in IDEMPOTENT_METHODS or "invalid_token" in errors
