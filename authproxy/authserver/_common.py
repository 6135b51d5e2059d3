"""Pieces shared by the authorization server's Resources: forms, CORS, redirects, scopes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl

from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.http.responses import (
    NO_STORE,
    AsyncResource,
    HTMLPageError,
    OAuthError,
    header_text,
    set_headers,
)
from authproxy.storage.families import ITokenFamilies
from authproxy.upstream.interface import IUpstreamProvider, UpstreamError, UpstreamUnavailable

_log = Logger()

# Form bodies of the token and revocation endpoints are tiny; refuse anything larger early.
MAX_FORM_BODY = 64 * 1024

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, MCP-Protocol-Version",
    "Access-Control-Max-Age": "86400",
}


def set_cors(request: Request, methods: str) -> None:
    """CORS for browser-based MCP clients: no cookies are involved, so any origin may call."""
    set_headers(request, CORS_HEADERS)
    request.setHeader("Access-Control-Allow-Methods", methods)


def preflight(request: Request, methods: str) -> bytes:
    """Answer a CORS preflight."""
    set_cors(request, methods)
    request.setResponseCode(204)
    return b""


class CrossOriginPost(AsyncResource):
    """A POST endpoint that browser-based clients call from other origins (register, token,
    revoke): the preflight is answered here; ``handle_POST`` calls ``set_cors``."""

    _METHODS = "POST, OPTIONS"

    async def handle_OPTIONS(self, request: Request) -> bytes:
        return preflight(request, self._METHODS)


def read_body(request: Request, limit: int) -> bytes:
    """The request body, or OAuthError 413 when it exceeds ``limit`` bytes."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    body = content.read(limit + 1)
    if len(body) > limit:
        raise OAuthError("invalid_request", f"the request body exceeds {limit} bytes", status=413)
    return bytes(body)


def media_type(request: Request) -> str:
    raw = header_text(request, "Content-Type") or ""
    return raw.split(";", 1)[0].strip().lower()


def single_valued(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Parameters as a dict; OAuthError invalid_request when one appears twice (RFC 6749 §3.1)."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name in values:
            if name == "resource":
                raise OAuthError("invalid_target", "at most one resource may be requested")
            raise OAuthError("invalid_request", f"parameter {name} is repeated")
        values[name] = value
    return values


def form_params(request: Request) -> dict[str, str]:
    """The POST body's form parameters only (never the query string, where secrets leak)."""
    if media_type(request) != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    if request.uri and b"?" in request.uri:
        raise OAuthError("invalid_request", "parameters are accepted in the body only")
    body = read_body(request, MAX_FORM_BODY)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not UTF-8") from None
    return single_valued(pairs)


def query_pairs(request: Request) -> list[tuple[str, str]]:
    """The query string's parameters in order (bytes decoded as UTF-8, bad bytes replaced)."""
    query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
    return parse_qsl(query, keep_blank_values=True)


def redirect(request: Request, location: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A 302 to ``location`` that no cache keeps and that leaks no Referer."""
    request.setResponseCode(302)
    request.setHeader("Location", location)
    request.setHeader("Referrer-Policy", "no-referrer")
    set_headers(request, NO_STORE)
    if headers:
        set_headers(request, headers)
    request.setHeader("Content-Type", "text/plain; charset=utf-8")
    return b""


def split_scope(value: str) -> tuple[str, ...]:
    """A scope string as a de-duplicated tuple, order kept."""
    return tuple(dict.fromkeys(value.split()))


def upstream_error_page(request: Request, error: UpstreamError) -> HTMLPageError:
    """The page shown when the upstream IdP failed; transient failures suggest a retry time."""
    if isinstance(error, UpstreamUnavailable):
        request.setHeader("Retry-After", str(error.retry_after))
        return HTMLPageError(
            502,
            "Sign-in is temporarily unavailable",
            "The identity provider could not be reached.",
            "Wait a moment, then go back to your application and sign in again.",
        )
    return HTMLPageError(
        502,
        "Sign-in failed",
        f"The identity provider's answer could not be used: {error}",
        "Go back to your application and sign in again. If this keeps happening, "
        "contact the administrator of this server.",
    )


async def end_token_family(
    families: ITokenFamilies, provider: IUpstreamProvider, family_id: str | None, tsid: str
) -> None:
    """Revoke a token family (its access tokens go on the deny list) and its upstream session.

    A family and its upstream token session belong to exactly one login, so once the family
    is revoked nothing may use the session again.
    """
    if family_id is not None:
        await families.revoke_family(family_id)
    try:
        await provider.end_session(tsid)
    except Exception:
        _log.failure("Ending upstream session {tsid} failed", tsid=tsid)
