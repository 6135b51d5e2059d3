"""The RFC 8707 audience rule, as a table: authorize and the token endpoint share it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.audience import InvalidTarget, ResourceIndicators, canonical_resource

A, B = "https://mcp.example.com/mcp", "https://mcp.example.com/other"
ONE = ResourceIndicators([A])
TWO = ResourceIndicators([A, B])

NOT_SERVED = "the requested resource is not served by this server"

# (indicators, requested) -> audience, or the invalid_target description
AT_AUTHORIZATION = [
    (ONE, None, A),
    (TWO, None, ""),  # the token request chooses
    (ONE, A, A),
    (TWO, B, B),
    (ONE, B, InvalidTarget(NOT_SERVED)),
    # scheme and host case-insensitively, a default port equals none; the configured
    # spelling is what is granted
    (ONE, "HTTPS://MCP.Example.COM/mcp", A),
    (ONE, "https://mcp.example.com:443/mcp", A),
    (ONE, "https://mcp.example.com/MCP", InvalidTarget(NOT_SERVED)),  # the path is exact
    (ONE, "http://mcp.example.com/mcp", InvalidTarget(NOT_SERVED)),
    (ONE, "https://mcp.example.com:8443/mcp", InvalidTarget(NOT_SERVED)),
    (ONE, "not a url", InvalidTarget(NOT_SERVED)),
]

# (indicators, requested, granted) -> audience, or the invalid_target description
AT_TOKEN = [
    (ONE, None, "", A),
    (ONE, None, A, A),
    (TWO, None, B, B),
    (TWO, A, "", A),
    (TWO, A, A, A),
    (TWO, None, "", InvalidTarget("resource is required: this server has several")),
    (ONE, B, "", InvalidTarget(NOT_SERVED)),
    (TWO, B, A, InvalidTarget("the requested resource is not the one authorized")),
    (ONE, None, B, InvalidTarget("the authorized resource is no longer served")),
    (ONE, "https://MCP.example.com:443/mcp", A, A),
    (TWO, "https://mcp.EXAMPLE.com/other", "", B),
]

# resource -> its canonical form
CANONICAL = [
    ("HTTP://Example.COM:80/a/B?q=X", "http://example.com/a/B?q=X"),
    ("https://example.com:443", "https://example.com"),
    ("https://example.com:80/", "https://example.com:80/"),
    ("http://127.0.0.1:8080/mcp", "http://127.0.0.1:8080/mcp"),
    ("https://[::1]:443/mcp", "https://[::1]/mcp"),
    ("https://example.com:99999/", "https://example.com:99999/"),  # invalid: unchanged
    ("/relative", "/relative"),
]


class AudienceRuleTests(SynchronousTestCase):
    def check(self, call: object, args: tuple[object, ...], expected: object) -> None:
        assert callable(call)
        if isinstance(expected, InvalidTarget):
            error = self.assertRaises(InvalidTarget, call, *args)
            self.assertEqual(str(error), str(expected), args)
        else:
            self.assertEqual(call(*args), expected, args)

    def test_at_authorization(self) -> None:
        for indicators, requested, expected in AT_AUTHORIZATION:
            self.check(indicators.at_authorization, (requested,), expected)

    def test_at_token(self) -> None:
        for indicators, requested, granted, expected in AT_TOKEN:
            self.check(indicators.at_token, (requested, granted), expected)

    def test_canonical_resource(self) -> None:
        for resource, expected in CANONICAL:
            self.assertEqual(canonical_resource(resource), expected, resource)
