"""Who the client is: the one place that turns a ``client_id`` into a client.

:class:`ClientResolver` answers for every endpoint that meets a client_id (authorize, token,
revoke). A client is one registered through RFC 7591 and kept in storage, or one named by a client
ID metadata document (an https URL as client_id, its metadata fetched from there:
``authserver/cimd``), without the endpoints telling them apart. Client authentication of the token and
revocation endpoints lives here too: authproxy's clients are public, so authenticating one
means finding it from a client_id sent in the body or as an HTTP Basic user.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import unquote_plus

from twisted.web.server import Request

from authproxy.authserver.cimd.cache import ClientDocuments
from authproxy.authserver.cimd.document import DocumentError, DocumentsBusy
from authproxy.authserver.cimd.url import is_document_url
from authproxy.http.errors import OAuthError
from authproxy.http.request_headers import header_text
from authproxy.storage.clients import IClients
from authproxy.storage.models import RegisteredClient

#: seconds a client refused with DocumentsBusy is asked to wait (a fetch ends within seconds)
BUSY_RETRY_AFTER = 5


class ClientResolver:
    """``client_id`` -> the client, or None when no client of that id exists (any more).

    With ``documents`` (client ID metadata documents enabled), a client_id URL is resolved
    by its document, and DocumentError says why one cannot be used.
    """

    def __init__(self, clients: IClients, documents: ClientDocuments | None = None) -> None:
        self._clients = clients
        self._documents = documents

    async def resolve(self, client_id: str) -> RegisteredClient | None:
        """The client named ``client_id`` (registered, or by its metadata document), or None."""
        if self._documents is not None and is_document_url(client_id):
            return await self._documents.resolve(client_id)
        return await self._clients.get_client(client_id)


async def authenticated_client(
    clients: ClientResolver, request: Request, params: Mapping[str, str]
) -> RegisteredClient:
    """The public client making a token or revocation request (401 otherwise)."""
    client_id, basic = client_id_from(request, params)
    if client_id is None:
        raise invalid_client("client_id is required", basic=basic)
    try:
        client = await clients.resolve(client_id)
    except DocumentError as e:
        raise invalid_client(f"client metadata document: {e.description}", basic=basic) from None
    except DocumentsBusy:
        raise OAuthError(
            "temporarily_unavailable",
            "too many client metadata documents are being fetched; retry shortly",
            status=503,
            headers={"Retry-After": str(BUSY_RETRY_AFTER)},
        ) from None
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
