from twisted.application.service import ServiceMaker

authproxy = ServiceMaker(
    "authproxy",
    "authproxy.tap",
    "OAuth 2.1 authorization server and streaming reverse proxy for an MCP server",
    "authproxy",
)
