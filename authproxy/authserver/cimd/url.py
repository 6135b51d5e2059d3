"""Which client_ids are metadata document URLs, and which of those may be fetched.

Registered client ids are random URL-safe strings, never containing ``://``, so a client_id
that starts with ``https://`` (or ``http://``) can only mean a metadata document. The URL is
read with the redirect URI parser (``authserver/redirect_uri.py``), which reads hosts the way
browsers do and refuses userinfo, fragments and ambiguous hosts; the draft adds: https, a
path, no ``.`` or ``..`` segment (percent-encoded ones included: a server may decode
``%2e%2e`` into ``..``). The draft says the URL SHOULD NOT have a query; here it must not:
``/c.json?a`` and ``/c.json?b`` would be two clients (two consents, two cache entries)
served by one document, and a query is free for anyone to vary.
"""

from __future__ import annotations

import attrs

from authproxy.authserver.cimd.document import DocumentError
from authproxy.authserver.limits import MAX_METADATA_URI_LENGTH
from authproxy.authserver.redirect_uri import InvalidRedirectURI, parse_redirect_uri
from authproxy.config import ClientMetadataDocumentsConfig


def is_document_url(client_id: str) -> bool:
    """Whether ``client_id`` names a metadata document rather than a registered client."""
    return client_id.startswith(("https://", "http://"))


@attrs.frozen
class DocumentURL:
    """A client_id URL that may be fetched: its scheme, host (lowercase) and port."""

    url: str
    scheme: str
    host: str
    port: int


def document_host(client_id: str) -> str | None:
    """The host a document client's identity comes from (None for registered clients)."""
    if not is_document_url(client_id):
        return None
    try:
        parsed = parse_redirect_uri(client_id)
    except InvalidRedirectURI:
        return None
    # the port is part of the identity (another port may be another server, another owner)
    default_port = attrs.evolve(parsed, port=None).origin[2]
    if parsed.port == default_port:
        parsed = attrs.evolve(parsed, port=None)
    return parsed.shown_host


def host_allowed(host: str, allowed_hosts: tuple[str, ...]) -> bool:
    """Whether ``host`` is in the allow-list (exact, or ``*.example.com`` for subdomains)."""
    if not allowed_hosts:
        return True
    for allowed in allowed_hosts:
        if allowed.startswith("*."):
            if host.endswith(allowed[1:]):
                return True
        elif host == allowed:
            return True
    return False


def document_url(client_id: str, settings: ClientMetadataDocumentsConfig) -> DocumentURL:
    """``client_id`` as a fetchable document URL; DocumentError saying why it is not one."""
    if len(client_id) > MAX_METADATA_URI_LENGTH:
        raise DocumentError(
            f"the client_id URL is longer than {MAX_METADATA_URI_LENGTH} characters"
        )
    try:
        parsed = parse_redirect_uri(client_id)
    except InvalidRedirectURI as e:
        raise DocumentError("the client_id is not a usable URL", str(e)) from None
    if parsed.scheme != "https" and not (
        parsed.scheme == "http" and settings.allow_loopback and parsed.is_loopback
    ):
        raise DocumentError("the client_id URL must use https")
    path, query, _ = parsed.rest.partition("?")
    if query or parsed.rest.endswith("?"):
        raise DocumentError("the client_id URL must not have a query string")
    if path in ("", "/"):
        raise DocumentError("the client_id URL must have a path")
    decoded = path.lower().replace("%2e", ".")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise DocumentError('the client_id URL must not contain "." or ".." path segments')
    if not host_allowed(parsed.host, settings.allowed_hosts):
        raise DocumentError("this server does not accept client metadata documents from that host")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return DocumentURL(client_id, parsed.scheme, parsed.host, port)
