"""How much a client may make the authorization server store: every cap in one place.

Registration and authorization are open to anyone, so every string they keep is bounded;
requests beyond a cap are refused (with a message naming the cap), never truncated.
Worst case of client-chosen text per record at these caps: a registered client about 9 KiB
(10 redirect URIs x 512, 4 metadata URIs x 512, name, 2 x 256, 5 contacts x 256), a pending
authorization about 1.5 KiB (state 512, redirect URI 512, OpenID nonce 512).
"""

from __future__ import annotations

# /oauth/register (RFC 7591)
MAX_REGISTRATION_BODY = 64 * 1024
MAX_REDIRECT_URIS = 10
MAX_REDIRECT_URI_LENGTH = 512  # long enough for every MCP client seen; the URI goes in pages
MAX_CLIENT_NAME = 256
MAX_METADATA_URI_LENGTH = 512  # client_uri, logo_uri, tos_uri, policy_uri, jwks_uri
MAX_METADATA_STRING = 256  # software_id, software_version
MAX_CONTACTS = 5
MAX_CONTACT_LENGTH = 256

# /oauth/authorize: the client's state and OpenID nonce are the free-form strings a pending
# authorization keeps (scopes and resource must be among the configured ones).
MAX_CLIENT_STATE = 512
MAX_NONCE = 512  # echoed in the ID token; OIDC sets no limit, clients send 32-64 characters
MAX_SCOPE_PARAMETER = 1024
