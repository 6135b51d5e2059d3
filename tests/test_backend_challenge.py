"""Reading the backend's WWW-Authenticate to decide whether a refused request is replayed."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from authproxy.proxy.backend_challenge import bearer_errors, replayable


class BearerErrorsTests(SynchronousTestCase):
    def test_challenges(self) -> None:
        cases: list[tuple[list[bytes], list[str | None]]] = [
            ([], []),
            ([b""], []),
            ([b"Bearer"], [None]),
            ([b'Bearer realm="x"'], [None]),
            (
                [b'bearer realm="a, error=invalid_token", error="insufficient_scope"'],
                ["insufficient_scope"],
            ),
            ([b"Bearer error=invalid_token"], ["invalid_token"]),
            ([b'Basic realm="x", Bearer error="invalid_token"'], ["invalid_token"]),
            ([b'Basic realm="x"', b'Bearer error="invalid_token"'], ["invalid_token"]),
            ([b'Basic realm="Bearer error=invalid_token"'], []),
            ([b"Negotiate abc==, Bearer"], [None]),
            ([b'Basic error="invalid_token"'], []),
            ([b'"unterminated, Bearer =, ==,,'], []),  # junk: no crash
        ]
        for values, expected in cases:
            self.assertEqual(bearer_errors(values), expected, values)

    def test_replayable(self) -> None:
        invalid = [b'Bearer error="invalid_token"']
        plain = [b'Bearer realm="backend"']
        self.assertTrue(replayable(b"POST", invalid))
        self.assertFalse(replayable(b"POST", plain))
        self.assertFalse(replayable(b"POST", [b'Bearer error="insufficient_scope"']))
        self.assertTrue(replayable(b"GET", plain))
        self.assertTrue(replayable(b"DELETE", plain))
        for method in (b"GET", b"POST"):
            self.assertFalse(replayable(method, []))
            self.assertFalse(replayable(method, [b'Basic realm="x"']))
