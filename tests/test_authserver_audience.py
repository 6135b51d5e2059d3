"""The RFC 8707 audience rule, as a table: authorize and the token endpoint share it."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.authserver.audience import InvalidTarget, ResourceIndicators

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
