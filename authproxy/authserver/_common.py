"""The client resolver of the token and revocation endpoints (public clients, RFC 6749 §2.3)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import unquote_plus

from twisted.web.server import Request

from authproxy.http.errors import OAuthError
from authproxy.http.request_headers import header_text
from authproxy.storage.interface import IStorage
from authproxy.storage.models import RegisteredClient


async def authenticated_client(
    storage: IStorage, request: Request, params: Mapping[str, str]
) -> RegisteredClient:
    """The registered public client making a token or revocation request (401 otherwise)."""
    client_id, basic = client_id_from(request, params)
    if client_id is None:
        raise invalid_client("client_id is required", basic=basic)
    client = await storage.get_client(client_id)
    if client is None:
        raise invalid_client("unknown client", basic=basic)
    return client


def client_id_from(request: Request, params: Mapping[str, str]) -> tuple[str | None, bool]:
    """(client_id, sent with HTTP Basic) for a public client: from Basic auth or the body.

    Public clients have no secret; a Basic header with a non-empty password is refused,
    since this server never issued one.
    """
    header = header_text(request, "Authorization")
    from_basic: str | None = None
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                raise invalid_client("malformed Basic credentials", basic=True) from None
            user, _, password = decoded.partition(":")
            if password:
                raise invalid_client("this server issues no client secrets", basic=True)
            from_basic = unquote_plus(user)
    from_body = params.get("client_id")
    if from_basic is not None and from_body is not None and from_basic != from_body:
        raise OAuthError("invalid_request", "client_id differs between Basic auth and the body")
    if from_basic is not None:
        return from_basic or None, True
    return from_body or None, False


def invalid_client(description: str, *, basic: bool = False) -> OAuthError:
    """401 invalid_client (RFC 6749 §5.2), with a Basic challenge when Basic auth was used."""
    headers = {"WWW-Authenticate": 'Basic realm="authproxy"'} if basic else {}
    return OAuthError("invalid_client", description, status=401, headers=headers)
