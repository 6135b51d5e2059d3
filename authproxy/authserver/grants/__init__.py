"""The grant types of the token endpoint: one module each, registered in :data:`GRANTS`.

Adding a grant (token exchange, say) is one new module here and one entry below; the token
endpoint, client registration and the metadata follow from the registry.
"""

from __future__ import annotations

from authproxy.authserver.grants.authorization_code import AuthorizationCodeGrant
from authproxy.authserver.grants.refresh_token import RefreshTokenGrant
from authproxy.authserver.grants.registry import Grant, GrantRegistry

GRANTS = GrantRegistry([AuthorizationCodeGrant, RefreshTokenGrant])

__all__ = ["GRANTS", "Grant", "GrantRegistry"]
