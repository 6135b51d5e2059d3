"""The upstream identity provider: OIDC, plain OAuth2 and the development login."""
