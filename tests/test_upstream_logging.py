"""No token, code, secret, verifier, nonce or id_token ever reaches a log event."""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from authproxy.testing.idp import generate_key
from tests.test_upstream_oidc import SECRET, Harness


class SecretsNotLoggedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, self.events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def assertNothingLeaked(self, h: Harness, extra: list[str]) -> None:
        secrets = [SECRET, *h.idp.issued, *extra]
        self.assertGreater(len(self.events), 1)
        for event in self.events:
            text = formatEvent(event) + repr(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += failure.getTraceback()
            for secret in secrets:
                self.assertNotIn(secret, text, f"secret in {event.get('log_format')!r}")

    def test_oidc_flows(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_status = 500
        h.start()
        h.idp.discovery_status = 200
        h.clock.advance(1)
        h.idp.expires_in = 60
        login = h.provider.start_login("s1")
        args = h.idp.approve(login.url)
        identity = self.successResultOf(h.provider.finish_login(args, h.pending(login, "s1")))
        extra = [login.code_verifier, login.nonce, identity.tsid]
        # refresh ok, then transient failure, then a refused refresh
        h.clock.advance(60)
        self.successResultOf(h.provider.upstream_access_token(identity.tsid))
        h.clock.advance(60)
        h.idp.hang.add("/token")
        d = h.provider.upstream_access_token(identity.tsid)
        h.clock.advance(10)
        self.failureResultOf(d)
        h.idp.hang.clear()
        h.idp.refresh_error = "invalid_grant"
        self.failureResultOf(h.provider.upstream_access_token(identity.tsid))
        # a rejected id_token and a refused code
        h.idp.sign_with = generate_key()
        h.idp.id_token_kid = h.idp.keys[0]["kid"]
        login = h.provider.start_login("s2")
        args = h.idp.approve(login.url)
        extra += [login.code_verifier, login.nonce]
        self.failureResultOf(h.provider.finish_login(args, h.pending(login, "s2")))
        h.idp.token_error = "invalid_grant"
        h.idp.token_status = 400
        self.failureResultOf(h.finish("s3"))
        self.assertNothingLeaked(h, extra)

    def test_oauth2_flow(self) -> None:
        h = Harness(
            "oauth2",
            upstream={"token_endpoint_auth_method": "client_secret_post"},
        )
        h.idp.form_encoded = True
        identity = self.successResultOf(h.finish())
        h.idp.userinfo_status = 403
        self.failureResultOf(h.finish("s2"))
        self.assertNothingLeaked(h, [identity.tsid])
