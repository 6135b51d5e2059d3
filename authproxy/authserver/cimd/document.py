"""A fetched client metadata document, checked per the draft and made into a client.

The document is the client's registration, published by the client itself: it must name
its own URL as ``client_id``, list its redirect URIs and carry no client secret. The rest
is checked by the same rules (and caps) as dynamic registration, after two allowances for
documents written for many servers at once: unknown grant types and unknown scopes are
ignored rather than refused (VS Code's document lists the device-code grant).
"""

from __future__ import annotations

from collections.abc import Sequence

from authproxy.authserver.register import SUPPORTED_GRANT_TYPES, validate_client_metadata
from authproxy.authserver.scopes import ClientScopes
from authproxy.http.errors import OAuthError
from authproxy.storage.models import RegisteredClient


class DocumentError(Exception):
    """A client_id URL whose document cannot be used.

    ``reason`` is plain words without anything from the document (it is logged);
    ``detail`` may quote the document and is only shown to the client or the user;
    ``logged`` is only logged (what the client must not learn, such as an internal address).
    ``host_wide``: the URL's host is at fault (it does not resolve, or not to a fetchable
    address), so every URL on it fails alike for a while.
    """

    def __init__(
        self, reason: str, detail: str = "", *, logged: str = "", host_wide: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.logged = logged
        self.host_wide = host_wide

    @property
    def log_text(self) -> str:
        """What the log line says: the reason, and what only the log may know."""
        return f"{self.reason} ({self.logged})" if self.logged else self.reason

    @property
    def description(self) -> str:
        """What the person or client is told: the reason, and the detail if there is one."""
        return f"{self.reason} ({self.detail})" if self.detail else self.reason


def client_from_document(
    url: str, document: object, scopes_supported: ClientScopes | Sequence[str], now: float
) -> RegisteredClient:
    """The client that the document at ``url`` describes; DocumentError when it is unusable."""
    if not isinstance(document, dict):
        raise DocumentError("the metadata document is not a JSON object")
    if document.get("client_id") != url:
        raise DocumentError("the metadata document's client_id is not the URL it was fetched from")
    if "client_secret" in document or "client_secret_expires_at" in document:
        raise DocumentError("the metadata document declares a client secret, which it must not")
    method = document.get("token_endpoint_auth_method", "none")
    if method == "private_key_jwt":
        raise DocumentError(
            "the metadata document asks for private_key_jwt client authentication, which this "
            'server does not support (use "none" with PKCE)'
        )
    if method != "none":
        raise DocumentError('the metadata document\'s token_endpoint_auth_method must be "none"')
    grants = document.get("grant_types", ["authorization_code"])
    if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
        raise DocumentError("the metadata document's grant_types is not a list of strings")
    if "authorization_code" not in grants:
        raise DocumentError("the metadata document does not allow the authorization_code grant")
    registration = {
        **document,
        "grant_types": [g for g in grants if g in SUPPORTED_GRANT_TYPES],
    }
    try:
        metadata = validate_client_metadata(registration, scopes_supported)
    except OAuthError as e:
        raise DocumentError("the metadata document is invalid", e.description) from None
    return RegisteredClient(
        client_id=url,
        redirect_uris=metadata.redirect_uris,
        grant_types=metadata.grant_types,
        response_types=metadata.response_types,
        scopes=metadata.scopes,
        client_name=metadata.client_name,
        token_endpoint_auth_method="none",
        created_at=now,
        extra_metadata=metadata.extra,
    )


class DocumentsBusy(Exception):
    """Too many metadata documents are being fetched (or host names resolved) at once: this
    one is refused without trying, and without being remembered as a failure; the client
    may retry shortly (authorize: an error page; token endpoint: 503 with Retry-After)."""
