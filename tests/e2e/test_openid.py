"""authproxy as an OpenID provider, checked by a strict client: oauth4webapi with
``requireIdToken``, through the real oidc-provider login, then userinfo and a refresh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jwcrypto.jwk import JWKSet
from jwcrypto.jwt import JWT

from tests import processes as procs
from tests.e2e.harness import CLIENT_REDIRECT, deploy
from tests.e2e.useragent import UserAgent

pytestmark = pytest.mark.e2e


async def browser_login(authorize_url: str) -> str:
    async with UserAgent() as agent:
        return await agent.login(authorize_url, "alice", procs.OIDC_PASSWORD)


def run_strict_client(issuer: str) -> tuple[dict[str, Any], list[str]]:
    """Run tests/oidc/strict_client.js, doing its browser step: (its result, its stderr)."""
    oidc = procs.ensure_oidc_fixture()
    if not (oidc / "node_modules" / "oauth4webapi").is_dir():
        pytest.skip("oauth4webapi is not installed: run `npm ci` in tests/oidc")
    client = subprocess.Popen(
        ["node", "strict_client.js", issuer, CLIENT_REDIRECT],
        cwd=oidc,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None and client.stdin is not None
        first = client.stdout.readline()
        if not first:
            raise AssertionError("strict client failed: " + client.communicate(timeout=30)[1])
        callback = procs.run_async(browser_login, json.loads(first)["authorize_url"])
        out, err = client.communicate(callback + "\n", timeout=60)
        assert client.returncode == 0, err
        return json.loads(out), err.splitlines()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


def test_strict_openid_client(tmp_path: Path) -> None:
    d = deploy(tmp_path)
    try:
        result, _ = run_strict_client(d.proxy.url)
        jwks = JWKSet.from_json(httpx2.get(d.proxy.url + "/.well-known/jwks.json").text)
    finally:
        d.stop()
    claims = result["claims"]
    verified = json.loads(JWT(jwt=result["id_token"], key=jwks, check_claims=False).claims)
    assert verified == claims
    assert claims["iss"] == d.proxy.url
    assert claims["nonce"] and claims["auth_time"] and claims["sid"] and claims["at_hash"]
    assert result["userinfo"] == {
        "sub": claims["sub"],
        "name": "Alice",
        "preferred_username": "alice",
        "email": "alice@example.test",
        "email_verified": True,
    }
    refreshed = result["refreshed_claims"]
    assert "nonce" not in refreshed
    for same in ("sub", "aud", "auth_time", "sid"):
        assert refreshed[same] == claims[same], same
