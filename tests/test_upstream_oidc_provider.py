"""OIDCProvider against a real OpenID provider (npm oidc-provider) on loopback, real reactor.

Discovery, the browser login (the e2e user agent stands in for the browser), code exchange,
id_token verification, refresh, and revocation of an ended session. Skips when tests/oidc/node_modules is not installed (CI
installs it and fails instead; see ``procs.ensure_oidc_fixture``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, ensureDeferred, maybeDeferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from authproxy.config import config_from_mapping
from authproxy.storage.memory import memory_storage
from authproxy.storage.models import PendingAuthorization
from authproxy.upstream.interface import UpstreamIdentity, UpstreamSessionEnded
from authproxy.upstream.registry import make_upstream_provider
from authproxy.upstream.sessions import TokenEndpointError
from tests import processes as procs

PUBLIC_URL = "http://127.0.0.1:9"  # never fetched: the user agent stops at the callback
REDIRECT_URI = PUBLIC_URL + "/oauth/callback"
CLIENTS = {
    "client_secret_basic": procs.OIDCClient("authproxy-basic", "basic-s3cret", (REDIRECT_URI,)),
    "client_secret_post": procs.OIDCClient(
        "authproxy-post",
        "post-s3cret",
        (REDIRECT_URI,),
        token_endpoint_auth_method="client_secret_post",
    ),
}


def _browser_login(url: str, username: str) -> dict[str, str]:
    """Log in at the IdP in a thread of its own (the user agent is asyncio, we are Twisted)."""
    from tests.e2e.useragent import UserAgent, callback_params

    async def run() -> str:
        async with UserAgent() as agent:
            return await agent.login(url, username, procs.OIDC_PASSWORD)

    return callback_params(asyncio.run(run()))


def _revocation_answered(provider: Any, timeout: float = 10.0) -> Deferred[None]:
    """Fires when the provider logs the IdP's answer to its revocation request, whatever it was."""
    answered: Deferred[None] = Deferred()

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_source") is provider and "hint" in event and not answered.called:
            answered.callback(None)

    globalLogPublisher.addObserver(observe)
    answered.addBoth(lambda result: (globalLogPublisher.removeObserver(observe), result)[1])
    answered.addTimeout(timeout, global_reactor)
    return answered


async def _until_ready(provider: Any, timeout: float = 10.0) -> None:
    waited = 0.0
    while not provider.readiness()[0]:
        if waited >= timeout:
            raise AssertionError(f"discovery did not succeed: {provider.readiness()[1]}")
        await deferLater(global_reactor, 0.05, lambda: None)
        waited += 0.05


async def login_and_refresh(oidc: procs.OIDCProvider, auth_method: str) -> None:
    client = CLIENTS[auth_method]
    assert client.client_secret is not None
    config = config_from_mapping(
        {
            "server": {"public_url": PUBLIC_URL},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {
                "type": "oidc",
                "issuer_url": oidc.issuer,
                "client_id": client.client_id,
                "client_secret_env": "UPSTREAM_SECRET",
                "token_endpoint_auth_method": auth_method,
            },
        },
        environ={"UPSTREAM_SECRET": client.client_secret},
    )
    storage = memory_storage(global_reactor)
    provider: Any = make_upstream_provider(config, storage.upstream_sessions, global_reactor)
    services = provider.services()
    for service in services:
        service.startService()
    try:
        await _until_ready(provider)

        state = "internal-state-" + auth_method
        login = provider.start_login(state)
        args = await deferToThread(_browser_login, login.url, "alice")
        assert args.get("state") == state, args
        now = global_reactor.seconds()
        pending = PendingAuthorization(
            state=state,
            client_id="mcp-client",
            redirect_uri="http://127.0.0.1:5555/cb",
            client_state=None,
            code_challenge="x" * 43,
            code_challenge_method="S256",
            scopes=("openid",),
            resource=PUBLIC_URL + "/mcp",
            created_at=now,
            expires_at=now + 600,
            upstream_code_verifier=login.code_verifier,
            upstream_nonce=login.nonce,
        )
        identity = await provider.finish_login(args, pending)
        assert isinstance(identity, UpstreamIdentity)
        assert (identity.subject, identity.name, identity.email) == (
            "alice",
            "Alice",
            "alice@example.test",
        )
        session = await storage.upstream_sessions.get_upstream_session(identity.tsid)
        assert session is not None and session.refresh_token is not None
        assert await provider.upstream_access_token(identity.tsid) == session.access_token

        # pretend the access token is about to expire: the next call refreshes at the IdP
        await storage.upstream_sessions.put_upstream_session(
            attrs.evolve(session, access_token_expires_at=now)
        )
        provider._fresh_tokens.clear()  # storage was rewritten behind the provider's back
        refreshed = await provider.upstream_access_token(identity.tsid)
        assert refreshed != session.access_token
        renewed = await storage.upstream_sessions.get_upstream_session(identity.tsid)
        assert renewed is not None and renewed.access_token == refreshed
        assert renewed.access_token_expires_at > global_reactor.seconds() + 30

        # a refresh token the IdP does not know ends the session
        await storage.upstream_sessions.put_upstream_session(
            attrs.evolve(renewed, refresh_token="not-a-refresh-token", access_token_expires_at=now)
        )
        provider._fresh_tokens.clear()
        with pytest.raises(UpstreamSessionEnded):
            await provider.upstream_access_token(identity.tsid)
        assert await storage.upstream_sessions.get_upstream_session(identity.tsid) is None

        # ending a session revokes its refresh token at the IdP (RFC 7009, discovered endpoint)
        assert provider._revocation_endpoint() == oidc.issuer + "/token/revocation"
        await storage.upstream_sessions.put_upstream_session(renewed)
        revoked = _revocation_answered(provider)
        await provider.end_session(identity.tsid)
        await revoked
        with pytest.raises(TokenEndpointError) as refused:
            await provider._refresh(renewed)
        assert refused.value.error == "invalid_grant"
    finally:
        for service in services:
            await maybeDeferred(service.stopService)


class RealProviderTests(TestCase):
    """Trial runs the real reactor; the login itself happens in a thread (asyncio)."""

    oidc: procs.OIDCProvider

    def setUp(self) -> None:
        # In setUp, not setUpClass: trial does not run setUpClass, and skips from here.
        procs.ensure_oidc_fixture()
        self.oidc = procs.start_oidc_provider(list(CLIENTS.values()), access_ttl=60)
        self.addCleanup(self.oidc.stop)

    def test_login_and_refresh_client_secret_basic(self) -> Deferred[None]:
        return ensureDeferred(login_and_refresh(self.oidc, "client_secret_basic"))

    def test_login_and_refresh_client_secret_post(self) -> Deferred[None]:
        return ensureDeferred(login_and_refresh(self.oidc, "client_secret_post"))
