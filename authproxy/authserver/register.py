"""Dynamic client registration (RFC 7591) at ``/oauth/register``.

Registration is open (MCP clients register themselves), so everything a client declares is
validated strictly, each source address is rate limited, and the client table is bounded
(storage evicts the oldest never-used client at the cap and expires unused ones).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from typing import Any

import attrs
from twisted.logger import Logger
from twisted.web.server import Request

from authproxy.authserver import redirect_uri
from authproxy.authserver.grants import GRANTS
from authproxy.authserver.limits import (
    MAX_CLIENT_NAME,
    MAX_CONTACT_LENGTH,
    MAX_CONTACTS,
    MAX_METADATA_STRING,
    MAX_METADATA_URI_LENGTH,
    MAX_REDIRECT_URI_LENGTH,
    MAX_REDIRECT_URIS,
    MAX_REGISTRATION_BODY,
)
from authproxy.authserver.ratelimit import TokenBucketLimiter, source_address
from authproxy.authserver.scopes import ClientScopes
from authproxy.http.cors import CrossOriginPost
from authproxy.http.errors import OAuthError
from authproxy.http.forms import OAUTH_REFUSALS, media_type, read_body
from authproxy.http.json import loads_untrusted
from authproxy.http.responses import NO_STORE, TrustedProxies, json_body, source_key
from authproxy.ops.metrics import EventCounters
from authproxy.storage import StorageFull
from authproxy.storage.clients import IClients
from authproxy.storage.models import RegisteredClient
from authproxy.tokens import Clock

SUPPORTED_GRANT_TYPES = GRANTS.grant_types

# Informational RFC 7591 metadata kept and echoed back (strings only, bounded).
_METADATA_URIS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
_METADATA_STRINGS = ("software_id", "software_version")
# C0/C1 controls, bidirectional embeddings/overrides/isolates, surrogates.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@attrs.frozen
class ClientMetadata:
    """Validated registration metadata, defaults applied."""

    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    response_types: tuple[str, ...]
    scopes: tuple[str, ...]
    client_name: str | None
    token_endpoint_auth_method: str
    extra: dict[str, object]


def _invalid(description: str) -> OAuthError:
    return OAuthError("invalid_client_metadata", description)


def check_redirect_uri(uri: object) -> str | None:
    """Why ``uri`` cannot be registered, or None when it can (``redirect_uri`` has the rule)."""
    return redirect_uri.check_redirect_uri(uri, MAX_REDIRECT_URI_LENGTH)


def _check_text(field: str, value: str) -> None:
    """Refuse text that pages and JSON cannot show faithfully: unpaired surrogates (JSON
    allows "\\ud800", UTF-8 does not), control characters, and bidirectional overrides,
    which make a name read differently from what it is."""
    if _UNSHOWABLE.search(value):
        raise _invalid(
            f"{field} contains a control character, a bidirectional control or an unpaired "
            "surrogate"
        )


def _is_https_url(value: str) -> bool:
    """Whether a browser would read ``value`` as an https URL (any fragment aside), the
    only kind a page may ever link or load (never http, javascript: or data:)."""
    try:
        parsed = redirect_uri.parse_redirect_uri(value.partition("#")[0])
    except redirect_uri.InvalidRedirectURI:
        return False
    return parsed.scheme == "https"


def validate_client_metadata(
    document: object, scopes_supported: ClientScopes | Sequence[str]
) -> ClientMetadata:
    """Check a registration request against every rule; raise OAuthError (400) otherwise."""
    if not isinstance(document, dict):
        raise _invalid("the body must be a JSON object")

    uris = document.get("redirect_uris")
    if not isinstance(uris, list) or not uris:
        raise OAuthError("invalid_redirect_uri", "redirect_uris is required (a non-empty list)")
    if len(uris) > MAX_REDIRECT_URIS:
        raise OAuthError(
            "invalid_redirect_uri", f"at most {MAX_REDIRECT_URIS} redirect URIs may be registered"
        )
    if not all(isinstance(uri, str) for uri in uris):
        raise OAuthError("invalid_redirect_uri", "redirect_uris must be a list of strings")
    for uri in uris:
        if (why := check_redirect_uri(uri)) is not None:
            raise OAuthError("invalid_redirect_uri", why)
    redirect_uris = tuple(dict.fromkeys(uris))

    method = document.get("token_endpoint_auth_method", "none")
    if method != "none":
        raise _invalid('token_endpoint_auth_method must be "none" (public clients with PKCE)')

    grant_types = document.get("grant_types", list(SUPPORTED_GRANT_TYPES))
    if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
        raise _invalid("grant_types must be a list of strings")
    grants = tuple(dict.fromkeys(grant_types))
    if "authorization_code" not in grants:
        raise _invalid("grant_types must include authorization_code")
    if unsupported := [g for g in grants if g not in SUPPORTED_GRANT_TYPES]:
        raise _invalid(f"unsupported grant_types: {', '.join(unsupported)}")

    response_types = document.get("response_types", ["code"])
    if (
        not isinstance(response_types, list)
        or not all(isinstance(r, str) for r in response_types)
        or tuple(dict.fromkeys(response_types)) != ("code",)
    ):
        raise _invalid('response_types must be ["code"]')

    name = document.get("client_name")
    if name is not None:
        if not isinstance(name, str):
            raise _invalid("client_name must be a string")
        if len(name) > MAX_CLIENT_NAME:
            raise _invalid(f"client_name is longer than {MAX_CLIENT_NAME} characters")
        _check_text("client_name", name)
        name = name.strip() or None

    scope = document.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise _invalid("scope must be a space-separated string")
    # Unsupported scopes are dropped, not refused (RFC 7591 §3.2.1: the response says what
    # was registered); a client that names none gets the default set, never every scope.
    scopes = ClientScopes.of(scopes_supported).registered(scope)

    extra: dict[str, object] = {}
    for field in (*_METADATA_URIS, *_METADATA_STRINGS):
        value = document.get(field)
        if value is None:
            continue
        limit = MAX_METADATA_URI_LENGTH if field in _METADATA_URIS else MAX_METADATA_STRING
        if not isinstance(value, str):
            raise _invalid(f"{field} must be a string")
        if len(value) > limit:
            raise _invalid(f"{field} is longer than {limit} characters")
        if field in _METADATA_URIS and not _is_https_url(value):
            raise _invalid(f"{field} must be an https URL")
        _check_text(field, value)
        extra[field] = value
    contacts = document.get("contacts")
    if contacts is not None:
        if not isinstance(contacts, list) or not all(isinstance(c, str) for c in contacts):
            raise _invalid("contacts must be a list of strings")
        if len(contacts) > MAX_CONTACTS:
            raise _invalid(f"at most {MAX_CONTACTS} contacts may be registered")
        if any(len(c) > MAX_CONTACT_LENGTH for c in contacts):
            raise _invalid(f"a contact is longer than {MAX_CONTACT_LENGTH} characters")
        for contact in contacts:
            _check_text("contacts", contact)
        extra["contacts"] = list(contacts)

    return ClientMetadata(
        redirect_uris=redirect_uris,
        grant_types=grants,
        response_types=("code",),
        scopes=scopes,
        client_name=name,
        token_endpoint_auth_method="none",
        extra=extra,
    )


def client_response(client: RegisteredClient) -> dict[str, Any]:
    """The registered metadata as RFC 7591 §3.2.1 returns it."""
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": int(client.created_at),
        "redirect_uris": list(client.redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "scope": " ".join(client.scopes),
    }
    if client.client_name is not None:
        body["client_name"] = client.client_name
    body.update(client.extra_metadata)
    return body


class RegistrationResource(CrossOriginPost):
    """``POST /oauth/register``: validate, rate limit, store, answer 201 with the client."""

    log = Logger()

    def __init__(
        self,
        clients: IClients,
        clock: Clock,
        scopes_supported: ClientScopes | Sequence[str],
        limiter: TokenBucketLimiter,
        trusted_proxies: Sequence[str] = (),
        enabled: bool = True,
        events: EventCounters | None = None,
    ) -> None:
        super().__init__()
        self._enabled = enabled
        self.events = events or EventCounters()
        self._clients = clients
        self._clock = clock
        self._scopes_supported = ClientScopes.of(scopes_supported)
        self._limiter = limiter
        self._trusted = TrustedProxies.from_cidrs(trusted_proxies)

    async def handle_POST(self, request: Request) -> bytes:
        try:
            answer = await self._register(request)
        except OAuthError as e:
            self.events.registrations.inc(e.error)
            raise
        self.events.registrations.inc("success")
        return answer

    async def _register(self, request: Request) -> bytes:
        self.cors.allow(request)
        if not self._enabled:
            # [auth_server.registration] enabled = false: clients use metadata documents
            raise OAuthError(
                "access_denied",
                "dynamic client registration is turned off on this server; use a client ID "
                "metadata document (an https URL as client_id) instead",
                status=403,
            )
        address = source_address(request, self._trusted)
        retry_after = await self._limiter.refuse(address, "Registration")
        if retry_after is not None:
            raise OAuthError(
                "too_many_requests",
                "too many registrations from this address; try again later",
                status=429,
                headers={"Retry-After": retry_after},
            )
        if media_type(request) != "application/json":
            raise _invalid("the body must be application/json")
        body = read_body(request, MAX_REGISTRATION_BODY, OAUTH_REFUSALS.too_large)
        try:
            document = loads_untrusted(body)
        except (ValueError, UnicodeDecodeError):
            raise _invalid("the body is not valid JSON") from None
        metadata = validate_client_metadata(document, self._scopes_supported)
        client = RegisteredClient(
            client_id=secrets.token_urlsafe(24),
            redirect_uris=metadata.redirect_uris,
            grant_types=metadata.grant_types,
            response_types=metadata.response_types,
            scopes=metadata.scopes,
            client_name=metadata.client_name,
            token_endpoint_auth_method=metadata.token_endpoint_auth_method,
            created_at=self._clock.seconds(),
            extra_metadata=metadata.extra,
            owner=source_key(address),  # at the cap, a flood replaces its own clients first
        )
        try:
            await self._clients.add_client(client)
        except StorageFull:
            self.log.error("Client registration refused: the client table is full")
            raise OAuthError(
                "temporarily_unavailable",
                "the server cannot register more clients right now",
                status=503,
                headers={"Retry-After": "3600"},
            ) from None
        self.log.info(
            "Registered client {client_id} from {address}",
            client_id=client.client_id,
            address=address,
        )
        return json_body(request, 201, client_response(client), NO_STORE)
