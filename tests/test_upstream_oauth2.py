"""OAuth2 upstream: explicit endpoints, form-encoded token answers, identity from userinfo."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from authproxy.config import UserinfoConfig
from authproxy.upstream.interface import IUpstreamProvider, UpstreamError, UpstreamUnavailable
from authproxy.upstream.oauth2 import map_userinfo
from tests.test_upstream_oidc import ISSUER, START, Harness, query

GITHUB_USERINFO = {"endpoint_url": ISSUER + "/userinfo", "subject_fields": ["id"]}


class UserinfoMappingTests(SynchronousTestCase):
    config = UserinfoConfig(
        endpoint_url=ISSUER + "/userinfo",
        subject_fields=("id", "sub"),
        name_fields=("name", "login"),
        email_fields=("email",),
    )

    def test_table(self) -> None:
        cases: list[tuple[dict[str, Any], tuple[str, str | None, str | None]]] = [
            # GitHub: numeric id, no name, login instead
            (
                {"id": 583231, "login": "octocat", "name": None, "email": None},
                ("583231", "octocat", None),
            ),
            ({"id": 0, "login": "zero"}, ("0", "zero", None)),
            ({"id": 12.0}, ("12", None, None)),
            ({"id": 1.5}, ("1.5", None, None)),
            ({"id": "", "sub": "s-1", "name": "Sam"}, ("s-1", "Sam", None)),
            ({"id": True, "sub": "s-2"}, ("s-2", None, None)),
            (
                {"sub": "u", "name": "", "login": "ulogin", "email": "u@example.test"},
                ("u", "ulogin", "u@example.test"),
            ),
            ({"sub": "u", "email": 5}, ("u", None, "5")),
        ]
        for document, (subject, name, email) in cases:
            identity = map_userinfo(document, self.config)
            self.assertEqual(
                (identity.subject, identity.name, identity.email), (subject, name, email), document
            )
            self.assertEqual(identity.claims["sub"], subject)

    def test_dotted_paths(self) -> None:
        # Twitter/X: {"data": {"id": ..., "username": ...}}
        config = UserinfoConfig(
            endpoint_url=ISSUER + "/userinfo",
            subject_fields=("data.id",),
            name_fields=("data.profile.name", "data.username"),
            email_fields=("e.mail",),
        )
        document = {"data": {"id": 42, "username": "x", "profile": "flat"}, "e.mail": "a@b.test"}
        identity = map_userinfo(document, config)
        # an exact key wins over a path; a path through a non-object is absent
        self.assertEqual((identity.subject, identity.name, identity.email), ("42", "x", "a@b.test"))
        self.assertRaises(UpstreamError, map_userinfo, {"data": [1]}, config)

    def test_no_subject(self) -> None:
        for document in ({}, {"id": None}, {"id": ""}, {"login": "x"}):
            failure = self.assertRaises(UpstreamError, map_userinfo, document, self.config)
            self.assertIn("id, sub", str(failure))


class OAuth2ProviderTests(SynchronousTestCase):
    def harness(self, **userinfo: Any) -> Harness:
        return Harness("oauth2", upstream={"userinfo": {**GITHUB_USERINFO, **userinfo}})

    def test_provides_interface(self) -> None:
        h = self.harness()
        self.assertTrue(verifyObject(IUpstreamProvider, h.provider))
        self.assertEqual(h.provider.readiness()[0], True)
        self.assertEqual(h.provider.routes(), {})

    def test_authorization_url(self) -> None:
        h = self.harness()
        login = h.provider.start_login("st")
        self.assertTrue(login.url.startswith(ISSUER + "/authorize?"))
        params = query(login.url)
        self.assertEqual(params["scope"], "read:user")
        self.assertEqual(params["code_challenge_method"], "S256")
        self.assertNotIn("nonce", params)
        self.assertEqual(login.nonce, "")

    def test_github_like_login(self) -> None:
        h = self.harness()
        h.idp.form_encoded = True
        h.idp.token_type = "bearer"
        h.idp.expires_in = None
        h.idp.issue_refresh_token = False
        h.idp.userinfo = {"id": 583231, "login": "octocat", "name": None}
        identity = self.successResultOf(h.finish())
        self.assertEqual(
            (identity.subject, identity.name, identity.email), ("583231", "octocat", None)
        )
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertIn(session.access_token, h.idp.access_tokens)
        self.assertIsNone(session.refresh_token)
        self.assertEqual(session.access_token_expires_at, START + 3600)
        self.assertEqual(h.idp.token_requests[-1]["accept"], "application/json")
        request = h.idp.userinfo_requests[-1]
        self.assertEqual(request["method"], "GET")
        self.assertEqual(request["headers"]["authorization"], "Bearer " + session.access_token)

    def test_form_encoded_with_refresh(self) -> None:
        h = self.harness()
        h.idp.form_encoded = True
        h.idp.expires_in = 600
        identity = self.successResultOf(h.finish())
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.access_token_expires_at, START + 600)
        h.clock.advance(600)
        token = self.successResultOf(h.provider.upstream_access_token(identity.tsid))
        self.assertNotEqual(token, session.access_token)

    def test_post_with_additional_headers(self) -> None:
        h = self.harness(
            http_method="POST",
            additional_headers={
                "X-GitHub-Api-Version": "2022-11-28",
                "Accept": "application/vnd.github+json",
            },
        )
        self.successResultOf(h.finish())
        request = h.idp.userinfo_requests[-1]
        self.assertEqual(request["method"], "POST")
        self.assertEqual(request["headers"]["x-github-api-version"], "2022-11-28")
        self.assertEqual(request["headers"]["accept"], "application/vnd.github+json")

    def test_userinfo_refused(self) -> None:
        h = self.harness()
        h.idp.userinfo_status = 403
        failure = self.failureResultOf(h.finish(), UpstreamError)
        self.assertIn("403", str(failure.value))

    def test_userinfo_unavailable(self) -> None:
        h = self.harness()
        h.idp.userinfo_status = 503
        self.failureResultOf(h.finish(), UpstreamUnavailable)

    def test_userinfo_without_subject(self) -> None:
        h = self.harness()
        h.idp.userinfo = {"login": "octocat"}
        self.failureResultOf(h.finish(), UpstreamError)

    def test_token_type_checked(self) -> None:
        h = self.harness()
        h.idp.token_type = "mac"
        self.failureResultOf(h.finish(), UpstreamError)
        self.assertEqual(h.idp.userinfo_requests, [])
