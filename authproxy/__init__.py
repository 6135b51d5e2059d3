"""authproxy: an OAuth 2.1 authorization server and streaming reverse proxy for one MCP server."""

__version__ = "0.1.0"
