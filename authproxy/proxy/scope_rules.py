"""Per-operation scopes: ``[[proxy.scope_rules]]``, checked on every proxied POST.

A rule names an MCP method (exactly), a glob on the tool or prompt name or resource URI
(fnmatch: ``*``, ``?``, ``[...]``, case-sensitive; ``*`` also matches a message without a
name) and the scopes that operation needs. Every rule that matches adds its scopes; a token
lacking any of them gets 403 ``insufficient_scope`` whose challenge names the scopes to ask
for: those the operation needs, the required ones, and those the token already has (so a
client that replaces its scope with the challenge's, as clients before the 2026-07-28 MCP
revision do, keeps what it had; clients that add the challenge's scopes to theirs get the
same set).

What a POST does is decided by its JSON-RPC body, which the backend acts on: the body is
parsed (only when rules exist) and its ``method`` and ``params.name`` / ``params.uri`` are
matched. The ``Mcp-Method`` and ``Mcp-Name`` headers (SEP-2243, required on POST by the
2026-07-28 revision) are only the client's claim about the body: one that contradicts it is
refused with 400 and the JSON-RPC error ``HEADER_MISMATCH``, so no header can make an
operation look like another. A batch (a JSON array, from revisions before the headers) is
matched element by element, on the body alone; every element must pass. A body that is not
JSON is refused (400, parse error): its operation cannot be known. So is one another parser
could read as another operation (400, invalid request; ``operation_of``): repeated keys,
keys that fold to a member's name, a resource URI that is not canonical (resource_uri.py).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from twisted.web.http_headers import Headers

from authproxy.authserver.scopes import union
from authproxy.config import Config, ScopeRule
from authproxy.http.errors import ErrorResponse, ProxyError
from authproxy.http.json import loads_untrusted
from authproxy.proxy.guard import BearerError, Principal
from authproxy.proxy.resource_uri import uri_problem

# JSON-RPC error codes: the standard parse error and invalid request, and the MCP SDKs'
# HEADER_MISMATCH.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
HEADER_MISMATCH = -32020

# The methods whose Mcp-Name header mirrors a parameter, and which one (SEP-2243).
NAME_PARAMS = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
    "resources/subscribe": "uri",
    "resources/unsubscribe": "uri",
}

_BASE64_VALUE = re.compile(r"=\?base64\?(.*)\?=", re.DOTALL)


class JSONRPCRefusal(ProxyError):
    """A 400 whose body is a JSON-RPC error (the client speaks JSON-RPC to this URL)."""

    def __init__(self, code: int, message: str, request_id: object = None) -> None:
        super().__init__(400, "invalid_request", message)
        self.code = code
        self.request_id = request_id

    def response(self) -> ErrorResponse:
        body = {
            "jsonrpc": "2.0",
            "id": self.request_id,
            "error": {"code": self.code, "message": self.description},
        }
        encoded = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return ErrorResponse(
            400, (("Content-Type", "application/json"), *self.headers.items()), encoded
        )


@attrs.frozen
class Operation:
    """What one JSON-RPC message does: its method and the name it acts on (None: neither)."""

    method: str | None
    name: str | None


@attrs.frozen
class _CompiledRule:
    method: str
    name: re.Pattern[str]
    scopes: tuple[str, ...]


class ScopeRules:
    """The configured rules, compiled; ``check`` refuses a request whose token lacks a scope."""

    def __init__(self, rules: Iterable[ScopeRule], required: Sequence[str] = ()) -> None:
        self._rules: dict[str, list[_CompiledRule]] = {}
        for rule in rules:
            compiled = _CompiledRule(
                rule.method, re.compile(fnmatch.translate(rule.name)), rule.scopes
            )
            self._rules.setdefault(rule.method, []).append(compiled)
        self._required = tuple(required)

    @classmethod
    def from_config(cls, config: Config) -> ScopeRules | None:
        """The rules of ``[proxy]``, or None when there are none (nothing is ever parsed)."""
        if not config.proxy.scope_rules:
            return None
        return cls(config.proxy.scope_rules, config.auth_server.required_scopes)

    def needed(self, operation: Operation) -> tuple[str, ...]:
        """The scopes ``operation`` needs: those of every rule that matches it."""
        if operation.method is None:
            return ()
        name = operation.name or ""
        return union(
            *(
                rule.scopes
                for rule in self._rules.get(operation.method, ())
                if rule.name.match(name)
            )
        )

    def check(self, headers: Headers, body: bytes, principal: Principal) -> None:
        """Raise BearerError(403, insufficient_scope) when the token lacks a scope an
        operation of ``body`` needs; JSONRPCRefusal when the body or a header is unusable."""
        for operation in operations(headers, body):
            needed = self.needed(operation)
            missing = [s for s in needed if s not in principal.scopes]
            if missing:
                raise BearerError(
                    403,
                    "insufficient_scope",
                    f"{_describe(operation)} needs the scope {' '.join(missing)}",
                    scope=union(needed, self._required, sorted(principal.scopes)),
                )


def _describe(operation: Operation) -> str:
    if operation.name is None:
        return str(operation.method)
    return f"{operation.method} of {operation.name!r}"


def operations(headers: Headers, body: bytes) -> list[Operation]:
    """The operations of a POST body, checked against its Mcp-Method and Mcp-Name headers."""
    try:
        message = loads_untrusted(body, object_pairs_hook=_Members.from_pairs)
    except (ValueError, UnicodeDecodeError):
        raise JSONRPCRefusal(
            PARSE_ERROR, "the request body is not JSON (a JSON-RPC message is expected)"
        ) from None
    if isinstance(message, list):
        return [operation_of(m) for m in message]
    operation = operation_of(message)
    request_id = message.get("id") if isinstance(message, dict) else None
    claimed = _header(headers, b"mcp-method", request_id)
    if claimed is not None and claimed != operation.method:
        raise JSONRPCRefusal(
            HEADER_MISMATCH,
            f"the Mcp-Method header ({claimed!r}) does not match the body's method "
            f"({operation.method!r})",
            request_id,
        )
    named = _header(headers, b"mcp-name", request_id)
    if named is not None and operation.name is not None:
        decoded = header_value(named)
        if decoded != operation.name:
            param = NAME_PARAMS[str(operation.method)]
            raise JSONRPCRefusal(
                HEADER_MISMATCH,
                f"the Mcp-Name header does not match the body's params.{param}",
                request_id,
            )
    return [operation]


def operation_of(message: object) -> Operation:
    """The method and name of one JSON-RPC message (a response or garbage has neither).

    JSONRPCRefusal (invalid request) when a backend could read another operation in it: a
    repeated key, or one that a case-insensitive or Unicode-folding parser reads as a
    member the operation is made of, in the message or its params; params that are not an
    object, a name that is not a string, or a resource URI that is not canonical."""
    if not isinstance(message, dict):
        return Operation(None, None)
    if (problem := _doubtful_member("the message", message)) is not None:
        raise JSONRPCRefusal(INVALID_REQUEST, problem)
    request_id = message.get("id")
    params = message.get("params")
    if isinstance(params, dict) and (problem := _doubtful_member("params", params)):
        raise JSONRPCRefusal(INVALID_REQUEST, problem, request_id)
    method = message.get("method")
    if not isinstance(method, str):
        return Operation(None, None)
    param = NAME_PARAMS.get(method)
    if param is None or params is None:
        return Operation(method, None)
    if not isinstance(params, dict):
        raise JSONRPCRefusal(INVALID_REQUEST, f"params of {method} must be an object", request_id)
    name = params.get(param)
    if name is None:
        return Operation(method, None)
    if not isinstance(name, str):
        raise JSONRPCRefusal(
            INVALID_REQUEST, f"params.{param} of {method} must be a string", request_id
        )
    if param == "uri" and (problem := uri_problem(name)) is not None:
        raise JSONRPCRefusal(
            INVALID_REQUEST,
            f"params.uri of {method} {problem}; send the resource's canonical URI",
            request_id,
        )
    return Operation(method, name)


# The members an operation is made of (JSON-RPC's, and those of the params rules read).
GUARDED_MEMBERS = frozenset({"jsonrpc", "method", "params", "id", "name", "uri", "arguments"})


class _Members(dict[str, Any]):
    """A parsed JSON object that knows a key it had more than once (json keeps the last)."""

    __slots__ = ("repeated",)
    repeated: str | None

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _Members:
        members = cls(pairs)
        members.repeated = None
        if len(members) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    members.repeated = key
                    break
                seen.add(key)
        return members


def _doubtful_member(where: str, members: dict[str, Any]) -> str | None:
    """Why a backend might read ``members`` differently, or None."""
    repeated = getattr(members, "repeated", None)
    if repeated is not None:
        return f"{where} has the key {_quoted(repeated)} twice; send each member once"
    for key in members:
        if key not in GUARDED_MEMBERS and (folded := _folded(key)) in GUARDED_MEMBERS:
            return (
                f"{where} has the key {_quoted(key)}, which some parsers read as "
                f'"{folded}"; spell it exactly'
            )
    return None


def _folded(key: str) -> str:
    """``key`` as the loosest parser compares it: Go's encoding/json folds case (and
    ``ſ`` to s, the Kelvin sign to k), others normalise Unicode or stop at a NUL."""
    folded = key.lower() if key.isascii() else unicodedata.normalize("NFKC", key).casefold()
    return folded.replace("\0", "")


def _quoted(key: str) -> str:
    return json.dumps(key[:40], ensure_ascii=False)


def _header(headers: Headers, name: bytes, request_id: object) -> str | None:
    values = headers.getRawHeaders(name)
    if not values:
        return None
    if len(values) > 1:
        raise JSONRPCRefusal(
            HEADER_MISMATCH, f"more than one {name.decode().title()} header", request_id
        )
    return values[0].decode("latin-1")


def header_value(value: str) -> str | None:
    """An Mcp-Name value as sent: verbatim, or the UTF-8 text of a ``=?base64?...?=`` value
    (SEP-2243's form for names that are not plain ASCII); None when that is malformed."""
    match = _BASE64_VALUE.fullmatch(value)
    if match is None:
        return value
    try:
        return base64.b64decode(match.group(1), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
