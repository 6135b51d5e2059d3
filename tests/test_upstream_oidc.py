"""OIDC upstream: discovery, the authorization redirect, code exchange and id_token checks.

Everything runs in memory: ``StubTreq`` over ``FakeIdP`` and a ``Clock``.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
from jwcrypto.jwk import JWK
from treq.testing import StubTreq
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from authproxy.config import Config, config_from_mapping
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import PendingAuthorization
from authproxy.testing.idp import FakeIdP, generate_key, sign_jwt
from authproxy.upstream.idtoken import verify_id_token
from authproxy.upstream.interface import (
    IUpstreamProvider,
    UpstreamDenied,
    UpstreamError,
    UpstreamIdentity,
    UpstreamLogin,
    UpstreamUnavailable,
)
from authproxy.upstream.registry import make_upstream_provider, upstream_services

ISSUER = "https://idp.example.test"
SECRET = "idp-client-secret-value"
START = 1_700_000_000.0


def make_config(
    kind: str = "oidc",
    *,
    issuer: str = ISSUER,
    secret: str | None = SECRET,
    upstream: dict[str, Any] | None = None,
    refresh_lifespan: str = "7d",
) -> Config:
    """A validated Config for an upstream of ``kind`` at the fake IdP."""
    section: dict[str, Any] = {"type": kind, "client_id": "authproxy"}
    if kind == "oidc":
        section["issuer_url"] = issuer
    elif kind == "oauth2":
        section.update(
            authorization_endpoint=issuer + "/authorize",
            token_endpoint=issuer + "/token",
            userinfo={"endpoint_url": issuer + "/userinfo"},
            scopes=["read:user"],
        )
    environ = {}
    if secret is not None:
        section["client_secret_env"] = "IDP_SECRET"
        environ["IDP_SECRET"] = secret
    section.update(upstream or {})
    return config_from_mapping(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "auth_server": {"refresh_token_lifespan": refresh_lifespan},
            "upstream": section,
        },
        environ=environ,
    )


class Harness:
    """A provider wired to a FakeIdP through StubTreq, with a Clock and memory storage."""

    def __init__(
        self,
        kind: str = "oidc",
        *,
        issuer: str = ISSUER,
        secret: str | None = SECRET,
        key_type: str = "EC",
        start: bool = True,
        **config_kw: Any,
    ) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.idp = FakeIdP(self.clock, issuer, client_secret=secret, key_type=key_type)
        self.stub = StubTreq(self.idp)
        self.storage = memory_storage(self.clock)
        self.config = make_config(kind, issuer=issuer, secret=secret, **config_kw)
        self.provider: Any = make_upstream_provider(
            self.config, self.storage.upstream_sessions, self.clock, http=self.stub
        )
        self.services = upstream_services(self.provider)
        if start:
            self.start()

    def start(self) -> None:
        for service in self.services:
            service.startService()

    def stop(self) -> None:
        for service in self.services:
            if service.running:
                service.stopService()

    def pending(self, login: UpstreamLogin, state: str) -> PendingAuthorization:
        now = self.clock.seconds()
        return PendingAuthorization(
            state=state,
            client_id="mcp-client",
            redirect_uri="http://127.0.0.1:5555/cb",
            client_state="client-state",
            code_challenge="x" * 43,
            code_challenge_method="S256",
            scopes=("openid",),
            resource="http://127.0.0.1:8080/mcp",
            created_at=now,
            expires_at=now + 600,
            upstream_code_verifier=login.code_verifier,
            upstream_nonce=login.nonce,
        )

    def begin(self, state: str = "internal-state") -> tuple[dict[str, str], PendingAuthorization]:
        """start_login, the user approves at the IdP: (callback args, pending authorization)."""
        login = self.provider.start_login(state)
        return self.idp.approve(login.url), self.pending(login, state)

    def finish(self, state: str = "internal-state") -> Any:
        """The Deferred of finish_login after a full approval."""
        args, pending = self.begin(state)
        return self.provider.finish_login(args, pending)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


class DiscoveryTests(SynchronousTestCase):
    def test_provides_interface(self) -> None:
        h = Harness()
        self.assertTrue(verifyObject(IUpstreamProvider, h.provider))

    def test_not_ready_until_discovered(self) -> None:
        h = Harness(start=False)
        ready, detail = h.provider.readiness()
        self.assertFalse(ready)
        self.assertIn("discovery", detail)
        self.assertRaises(UpstreamUnavailable, h.provider.start_login, "s")
        h.start()
        self.assertEqual(h.provider.readiness()[0], True)
        self.assertEqual(h.idp.count("/.well-known/openid-configuration"), 1)

    def test_failure_retried_with_backoff(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_status = 500
        h.start()
        path = "/.well-known/openid-configuration"
        self.assertEqual(h.idp.count(path), 1)
        ready, detail = h.provider.readiness()
        self.assertFalse(ready)
        self.assertIn("HTTP 500", detail)
        # 1, 2, 4, 8 s apart
        expected = 1
        for delay in (1, 2, 4, 8):
            h.clock.advance(delay - 0.01)
            self.assertEqual(h.idp.count(path), expected)
            h.clock.advance(0.01)
            expected += 1
            self.assertEqual(h.idp.count(path), expected)
        h.idp.discovery_status = 200
        h.clock.advance(16)
        self.assertTrue(h.provider.readiness()[0])
        # then a periodic refresh, at the normal interval again
        count = h.idp.count(path)
        h.clock.advance(3599)
        self.assertEqual(h.idp.count(path), count)
        h.clock.advance(1)
        self.assertEqual(h.idp.count(path), count + 1)

    def test_backoff_is_capped(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_status = 503
        h.start()
        for _ in range(20):
            h.clock.advance(300)
        discovery = h.provider.discovery
        count = h.idp.count("/.well-known/openid-configuration")
        h.clock.advance(300)
        self.assertEqual(h.idp.count("/.well-known/openid-configuration"), count + 1)
        self.assertGreater(discovery.failures, 10)

    def test_failed_refresh_keeps_metadata(self) -> None:
        h = Harness()
        h.idp.discovery_status = 500
        h.clock.advance(3600)
        self.assertTrue(h.provider.readiness()[0])
        h.provider.start_login("s")

    def test_issuer_must_match_exactly(self) -> None:
        for issuer in (ISSUER + "/", "https://other.example.test", None):
            h = Harness(start=False)
            h.idp.discovery_overrides = {"issuer": issuer}
            h.start()
            ready, detail = h.provider.readiness()
            self.assertFalse(ready)
            self.assertIn("issuer", detail)

    def test_endpoints_must_be_https(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_overrides = {"token_endpoint": "http://idp.example.test/token"}
        h.start()
        ready, detail = h.provider.readiness()
        self.assertFalse(ready)
        self.assertIn("token_endpoint must use https", detail)

    def test_loopback_issuer_may_use_http(self) -> None:
        h = Harness(issuer="http://127.0.0.1:9999")
        self.assertTrue(h.provider.readiness()[0])
        self.successResultOf(h.finish())

    def test_discovery_timeout(self) -> None:
        h = Harness(start=False)
        h.idp.hang.add("/.well-known/openid-configuration")
        h.start()
        self.assertFalse(h.provider.readiness()[0])
        h.clock.advance(10)
        ready, detail = h.provider.readiness()
        self.assertFalse(ready)
        self.assertIn("did not answer within 10 s", detail)
        h.idp.hang.clear()
        h.clock.advance(1)
        self.assertTrue(h.provider.readiness()[0])

    def test_stop_cancels_retries(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_status = 500
        h.start()
        h.stop()
        h.clock.advance(1000)
        self.assertEqual(h.idp.count("/.well-known/openid-configuration"), 1)
        self.assertEqual(h.clock.getDelayedCalls(), [])


class StartLoginTests(SynchronousTestCase):
    def test_authorization_url(self) -> None:
        h = Harness()
        login = h.provider.start_login("the-state")
        self.assertTrue(login.url.startswith(ISSUER + "/authorize?"))
        params = query(login.url)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(login.code_verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        self.assertEqual(
            params,
            {
                "response_type": "code",
                "client_id": "authproxy",
                "redirect_uri": "http://127.0.0.1:8080/oauth/callback",
                "scope": "openid offline_access email profile",
                "state": "the-state",
                "nonce": login.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        self.assertGreaterEqual(len(login.code_verifier), 43)
        self.assertGreaterEqual(len(login.nonce), 16)
        other = h.provider.start_login("the-state")
        self.assertNotEqual(other.code_verifier, login.code_verifier)
        self.assertNotEqual(other.nonce, login.nonce)

    def test_extra_authorize_params(self) -> None:
        # Google wants access_type=offline for a refresh token
        h = Harness(upstream={"authorize_params": {"access_type": "offline", "hd": "x.test"}})
        params = query(h.provider.start_login("s").url)
        self.assertEqual((params["access_type"], params["hd"]), ("offline", "x.test"))
        self.assertEqual(params["state"], "s")

    def test_endpoint_with_query(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_overrides = {"authorization_endpoint": ISSUER + "/authorize?tenant=x"}
        h.start()
        url = h.provider.start_login("s").url
        self.assertTrue(url.startswith(ISSUER + "/authorize?tenant=x&"))


class FinishLoginTests(SynchronousTestCase):
    def test_login(self) -> None:
        h = Harness()
        identity = self.successResultOf(h.finish())
        self.assertIsInstance(identity, UpstreamIdentity)
        self.assertEqual(
            (identity.subject, identity.name, identity.email),
            ("alice", "Alice", "alice@example.test"),
        )
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.upstream_name, "oidc")
        self.assertEqual(session.subject, "alice")
        self.assertIn(session.access_token, h.idp.access_tokens)
        self.assertIn(session.refresh_token, h.idp.refresh_tokens)
        self.assertEqual(session.access_token_expires_at, START + 3600)
        self.assertIsNotNone(session.id_token)
        self.assertEqual(session.claims["email"], "alice@example.test")
        request = h.idp.token_requests[-1]
        self.assertEqual(request["auth_method"], "client_secret_basic")
        self.assertEqual(request["accept"], "application/json")
        self.assertNotIn("client_secret", request["form"])
        token = self.successResultOf(h.provider.upstream_access_token(identity.tsid))
        self.assertEqual(token, session.access_token)

    def test_subject_claim(self) -> None:
        h = Harness(upstream={"subject_claim": "oid"})
        h.idp.id_token_claims = {"oid": "00000000-aaaa"}
        identity = self.successResultOf(h.finish())
        self.assertEqual(identity.subject, "00000000-aaaa")
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.subject, "00000000-aaaa")

    def test_subject_claim_missing_fails_the_login(self) -> None:
        h = Harness(upstream={"subject_claim": "oid"})
        failure = self.failureResultOf(h.finish(), UpstreamError)
        self.assertIn('"oid"', str(failure.value))

    def test_tsids_are_fresh(self) -> None:
        h = Harness()
        first = self.successResultOf(h.finish("s1"))
        second = self.successResultOf(h.finish("s2"))
        self.assertNotEqual(first.tsid, second.tsid)
        self.assertGreaterEqual(len(first.tsid), 32)

    def test_session_lives_for_refresh_lifespan(self) -> None:
        h = Harness(refresh_lifespan="2d")
        h.idp.expires_in = 300
        identity = self.successResultOf(h.finish())
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.access_token_expires_at, START + 300)
        self.assertEqual(session.expires_at, START + 2 * 86400)
        # long after the upstream access token expired, the session (and its refresh) remain
        h.clock.advance(86400)
        token = self.successResultOf(h.provider.upstream_access_token(identity.tsid))
        self.assertNotEqual(token, session.access_token)

    def test_client_secret_post(self) -> None:
        h = Harness(upstream={"token_endpoint_auth_method": "client_secret_post"})
        self.successResultOf(h.finish())
        request = h.idp.token_requests[-1]
        self.assertEqual(request["auth_method"], "client_secret_post")
        self.assertEqual(request["form"]["client_secret"], SECRET)

    def test_public_client(self) -> None:
        h = Harness(secret=None)
        self.successResultOf(h.finish())
        request = h.idp.token_requests[-1]
        self.assertEqual(request["auth_method"], "none")
        self.assertEqual(request["form"]["client_id"], "authproxy")

    def test_secret_with_special_characters(self) -> None:
        h = Harness(secret="a:b/c+d%e f")
        self.successResultOf(h.finish())

    def test_idp_error_denies(self) -> None:
        h = Harness()
        login = h.provider.start_login("s")
        args = h.idp.deny(login.url, "access_denied")
        failure = self.failureResultOf(
            h.provider.finish_login(args, h.pending(login, "s")), UpstreamDenied
        )
        self.assertIn("access_denied", str(failure.value))
        self.assertNotIn("said no", str(failure.value))
        self.assertEqual(h.idp.token_requests, [])

    def test_idp_error_code_is_sanitised(self) -> None:
        h = Harness()
        login = h.provider.start_login("s")
        args = {"error": "<script>alert(1)</script>", "state": "s"}
        failure = self.failureResultOf(
            h.provider.finish_login(args, h.pending(login, "s")), UpstreamDenied
        )
        self.assertNotIn("<", str(failure.value))

    def test_state_mismatch(self) -> None:
        h = Harness()
        args, pending = h.begin("s")
        args["state"] = "other"
        self.failureResultOf(h.provider.finish_login(args, pending), UpstreamError)

    def test_missing_code(self) -> None:
        h = Harness()
        args, pending = h.begin("s")
        del args["code"]
        self.failureResultOf(h.provider.finish_login(args, pending), UpstreamError)

    def test_callback_iss_must_match(self) -> None:
        h = Harness()
        args, pending = h.begin("s")
        args["iss"] = "https://evil.example.test"
        failure = self.failureResultOf(h.provider.finish_login(args, pending), UpstreamError)
        self.assertIn("iss", str(failure.value))
        self.assertEqual(h.idp.token_requests, [])

    def test_lost_verifier_or_nonce_fails_closed(self) -> None:
        h = Harness()
        args, pending = h.begin("s1")
        failure = self.failureResultOf(
            h.provider.finish_login(args, attrs.evolve(pending, upstream_code_verifier="")),
            UpstreamError,
        )
        self.assertIn("verifier", str(failure.value))
        self.assertEqual(h.idp.token_requests, [])
        args, pending = h.begin("s2")
        failure = self.failureResultOf(
            h.provider.finish_login(args, attrs.evolve(pending, upstream_nonce="")),
            UpstreamError,
        )
        self.assertIn("nonce", str(failure.value))

    def test_promised_iss_must_be_present(self) -> None:
        h = Harness()  # the fake IdP advertises authorization_response_iss_parameter_supported
        args, pending = h.begin("s")
        self.assertIn("iss", args)
        del args["iss"]
        failure = self.failureResultOf(h.provider.finish_login(args, pending), UpstreamError)
        self.assertIn("iss", str(failure.value))

    def test_code_refused(self) -> None:
        h = Harness()
        h.idp.token_error = "invalid_grant"
        h.idp.token_status = 400
        failure = self.failureResultOf(h.finish(), UpstreamError)
        self.assertNotIsInstance(failure.value, UpstreamUnavailable)
        self.assertIn("invalid_grant", str(failure.value))

    def test_wrong_verifier_refused_by_idp(self) -> None:
        h = Harness()
        args, pending = h.begin("s")
        pending = attrs.evolve(pending, upstream_code_verifier="x" * 50)
        self.failureResultOf(h.provider.finish_login(args, pending), UpstreamError)

    def test_token_endpoint_unavailable(self) -> None:
        h = Harness()
        h.idp.token_error = "server_error"
        h.idp.token_status = 503
        self.failureResultOf(h.finish(), UpstreamUnavailable)

    def test_token_endpoint_timeout(self) -> None:
        h = Harness()
        h.idp.hang.add("/token")
        d = h.finish()
        self.assertNoResult(d)
        h.clock.advance(10)
        failure = self.failureResultOf(d, UpstreamUnavailable)
        self.assertIn("10 s", str(failure.value))

    def test_token_type_must_be_bearer(self) -> None:
        for token_type, ok in (
            ("Bearer", True),
            ("bearer", True),
            ("BEARER", True),
            ("mac", False),
        ):
            h = Harness()
            h.idp.token_type = token_type
            if ok:
                self.successResultOf(h.finish())
            else:
                failure = self.failureResultOf(h.finish(), UpstreamError)
                self.assertIn("Bearer", str(failure.value))

    def test_missing_expires_in_defaults_to_one_hour(self) -> None:
        h = Harness()
        h.idp.expires_in = None
        identity = self.successResultOf(h.finish())
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        assert session is not None
        self.assertEqual(session.access_token_expires_at, START + 3600)


class IDTokenTests(SynchronousTestCase):
    def reject(self, h: Harness, reason: str) -> None:
        failure = self.failureResultOf(h.finish(), UpstreamError)
        self.assertNotIsInstance(failure.value, UpstreamUnavailable)
        self.assertIn(reason, str(failure.value))

    def test_id_token_required(self) -> None:
        h = Harness()
        h.idp.issue_id_token = False
        self.reject(h, "no id_token")

    def test_bad_signature(self) -> None:
        h = Harness()
        h.idp.sign_with = generate_key()
        h.idp.id_token_kid = h.idp.keys[0]["kid"]
        self.reject(h, "signature is invalid")

    def test_wrong_audience(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"aud": "someone-else"}
        self.reject(h, "aud")

    def test_several_audiences_need_azp(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"aud": ["other", "authproxy"]}
        self.reject(h, "azp")
        h.idp.id_token_claims = {"aud": ["other", "authproxy"], "azp": "other"}
        self.reject(h, "azp")
        h.idp.id_token_claims = {"aud": ["other", "authproxy"], "azp": "authproxy"}
        self.successResultOf(h.finish())

    def test_wrong_issuer(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"iss": "https://evil.example.test"}
        self.reject(h, "issuer")

    def test_expired(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"exp": START - 121}
        self.reject(h, "expired")
        h.idp.id_token_claims = {"exp": START - 60}  # within the leeway
        self.successResultOf(h.finish())

    def test_issued_in_the_future(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"iat": START + 600}
        self.reject(h, "future")
        h.idp.id_token_claims = {"iat": None}
        self.reject(h, "iat")

    def test_wrong_nonce(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"nonce": "not-the-nonce"}
        self.reject(h, "nonce")
        h.idp.id_token_claims = {"nonce": None}
        self.reject(h, "nonce")

    def test_missing_subject(self) -> None:
        h = Harness()
        h.idp.id_token_claims = {"sub": None}
        self.reject(h, "subject")

    def test_alg_none(self) -> None:
        h = Harness()
        h.idp.id_token_alg = "none"
        self.reject(h, "'none' is not allowed")

    def test_hmac_algs_refused(self) -> None:
        h = Harness()
        secret = JWK.generate(kty="oct", size=256)
        h.idp.sign_with = secret
        h.idp.id_token_alg = "HS256"
        h.idp.id_token_kid = h.idp.keys[0]["kid"]
        self.reject(h, "'HS256' is not allowed")

    def test_alg_must_match_key(self) -> None:
        h = Harness(key_type="RSA")
        # an ES256 signature claiming the IdP's RSA key
        h.idp.sign_with = generate_key("EC")
        h.idp.id_token_kid = h.idp.keys[0]["kid"]
        self.reject(h, "alg does not match")

    def test_rsa_and_eddsa_keys(self) -> None:
        for kty in ("RSA", "OKP"):
            h = Harness(key_type=kty)
            self.successResultOf(h.finish())

    def test_token_without_kid(self) -> None:
        h = Harness()
        h.idp.id_token_kid = None
        self.successResultOf(h.finish())

    def test_jwe_like_token_refused(self) -> None:
        h = Harness()
        h.idp.id_token_alg = None
        token = sign_jwt({"sub": "x"}, h.idp.keys[0]) + ".extra"
        d = verify_id_token(
            token, keys=h.provider.jwks, issuer=ISSUER, client_id="authproxy", nonce="n", now=START
        )
        failure = self.failureResultOf(ensureDeferred(d), UpstreamError)
        self.assertIn("compact", str(failure.value))


class KeyRotationTests(SynchronousTestCase):
    def test_jwks_cached(self) -> None:
        h = Harness()
        self.successResultOf(h.finish("a"))
        self.successResultOf(h.finish("b"))
        self.assertEqual(h.idp.count("/jwks"), 1)

    def test_unknown_kid_refetches(self) -> None:
        h = Harness()
        self.successResultOf(h.finish("a"))
        h.clock.advance(61)
        h.idp.rotate_keys()
        self.successResultOf(h.finish("b"))
        self.assertEqual(h.idp.count("/jwks"), 2)

    def test_refetch_is_rate_limited(self) -> None:
        h = Harness()
        self.successResultOf(h.finish("a"))
        h.clock.advance(61)
        h.idp.rotate_keys()
        self.successResultOf(h.finish("b"))
        # a token with a made-up kid right after: no new fetch
        h.idp.sign_with = generate_key()
        for state in ("c", "d", "e"):
            failure = self.failureResultOf(h.finish(state), UpstreamError)
            self.assertIn("key", str(failure.value))
        self.assertEqual(h.idp.count("/jwks"), 2)
        h.clock.advance(60)
        self.failureResultOf(h.finish("f"), UpstreamError)
        self.assertEqual(h.idp.count("/jwks"), 3)

    def test_rotation_right_after_fetch_waits_for_rate_limit(self) -> None:
        h = Harness()
        self.successResultOf(h.finish("a"))
        h.idp.rotate_keys()
        self.failureResultOf(h.finish("b"), UpstreamError)
        h.clock.advance(60)
        self.successResultOf(h.finish("c"))

    def test_jwks_refreshed_when_old(self) -> None:
        h = Harness()
        self.successResultOf(h.finish("a"))
        h.clock.advance(3600)
        self.successResultOf(h.finish("b"))
        self.assertEqual(h.idp.count("/jwks"), 2)

    def test_jwks_unavailable_is_transient(self) -> None:
        h = Harness()
        h.idp.hang.add("/jwks")
        d = h.finish()
        h.clock.advance(10)
        self.failureResultOf(d, UpstreamUnavailable)


class UpstreamRevocationTests(SynchronousTestCase):
    """Ending a token session asks the IdP to revoke its tokens (RFC 7009), best effort."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def ended(self, h: Harness) -> Any:
        """Log in, end the session; the session as it was stored."""
        identity = self.successResultOf(h.finish())
        session = self.successResultOf(
            h.storage.upstream_sessions.get_upstream_session(identity.tsid)
        )
        self.successResultOf(h.provider.end_session(identity.tsid))
        self.assertIsNone(
            self.successResultOf(h.storage.upstream_sessions.get_upstream_session(identity.tsid))
        )
        return session

    def logged(self) -> str:
        return "\n".join(formatEvent(e) for e in self.events)

    def test_refresh_token_revoked_with_client_authentication(self) -> None:
        h = Harness()
        session = self.ended(h)
        [revocation] = h.idp.revocations
        self.assertEqual(
            revocation["form"], {"token": session.refresh_token, "token_type_hint": "refresh_token"}
        )
        self.assertEqual(revocation["auth_method"], "client_secret_basic")
        self.assertNotIn(session.refresh_token, h.idp.refresh_tokens)
        self.assertIn("revoked an ended session's refresh_token", self.logged())

    def test_access_token_when_there_is_no_refresh_token(self) -> None:
        h = Harness()
        h.idp.issue_refresh_token = False
        session = self.ended(h)
        [revocation] = h.idp.revocations
        self.assertEqual(
            revocation["form"], {"token": session.access_token, "token_type_hint": "access_token"}
        )

    def test_public_client_names_itself(self) -> None:
        h = Harness(secret=None)
        self.ended(h)
        [revocation] = h.idp.revocations
        self.assertEqual(revocation["auth_method"], "none")
        self.assertEqual(revocation["form"]["client_id"], "authproxy")

    def test_no_endpoint_no_request(self) -> None:
        h = Harness(start=False)
        h.idp.discovery_overrides = {"revocation_endpoint": None}
        h.start()
        self.ended(h)
        self.assertEqual(h.idp.revocations, [])
        self.assertEqual(h.idp.count("/revoke"), 0)

    def test_configured_endpoint_wins_and_serves_oauth2(self) -> None:
        for kind, extra in (
            ("oidc", {}),
            ("oauth2", {"userinfo": {"endpoint_url": ISSUER + "/userinfo"}}),
        ):
            h = Harness(kind, upstream={"revocation_endpoint": ISSUER + "/revoke?v=2", **extra})
            self.ended(h)
            [revocation] = h.idp.revocations
            self.assertEqual(revocation["uri"], "/revoke?v=2", kind)

    def test_refusal_and_outage_are_logged_without_tokens(self) -> None:
        for status, error in ((400, "unsupported_token_type"), (503, None)):
            h = Harness()
            h.idp.revocation_status = status
            h.idp.revocation_error = error
            session = self.ended(h)  # the session ends whatever the IdP says
            self.assertEqual(len(h.idp.revocations), 1)
            text = self.logged()
            self.assertIn("revoke", text)
            self.assertIn(error or "HTTP 503", text)
            for secret in (session.refresh_token, session.access_token, SECRET):
                self.assertNotIn(secret, text)
            self.events.clear()

    def test_unknown_session_asks_nothing(self) -> None:
        h = Harness()
        self.successResultOf(h.provider.end_session("no-such-tsid"))
        self.assertEqual(h.idp.revocations, [])
