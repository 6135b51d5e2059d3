"""Obtain real tokens through the running daemons' HTTP endpoints (no in-process minting).

authproxy (``upstream.type = "development"``): register a client, then per login
authorize -> development login form POST -> callback -> the client's redirect URI with a code.
The codes are redeemed at ``/oauth/token`` by the measurement itself (P3), or here for a bearer.

oidc-provider: the end-to-end tests' user agent logs in and consents; the code is redeemed for
a refresh token to start a chain.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import attrs
from httpclient import Connection, Response, build_request

REPO = Path(__file__).resolve().parents[1]
REDIRECT_URI = "http://127.0.0.1:9/callback"
VERIFIER = "bench-" + "v" * 60


def challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def form(fields: dict[str, str]) -> bytes:
    return urlencode(fields).encode("ascii")


class FlowError(Exception):
    """A step of the login flow answered something unexpected."""


@attrs.define
class AuthproxyClient:
    """A registered public client of one authproxy daemon and the steps of its flow."""

    host: str
    port: int
    public_url: str
    resource: str
    client_id: str = ""

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    async def register(self) -> None:
        conn = await Connection.open(self.host, self.port)
        body = json.dumps(
            {
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "client_name": "authproxy benchmarks",
            }
        ).encode()
        response = await conn.request(
            build_request(
                "POST",
                "/oauth/register",
                self.netloc,
                {"Content-Type": "application/json"},
                body,
            )
        )
        conn.close()
        if response.status != 201:
            raise FlowError(f"register: {response.status} {response.body[:300]!r}")
        self.client_id = json.loads(response.body)["client_id"]

    def authorize_target(self, state: str) -> str:
        return "/oauth/authorize?" + urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": REDIRECT_URI,
                "code_challenge": challenge(VERIFIER),
                "code_challenge_method": "S256",
                "state": state,
                "scope": "openid profile email offline_access",
                "resource": self.resource,
            }
        )

    async def login(self, conn: Connection, username: str) -> str:
        """One whole login on ``conn``; the authorization code."""
        state = secrets.token_urlsafe(8)
        cookies: dict[str, str] = {}
        response = await self._get(conn, self.authorize_target(state), cookies)
        for _ in range(10):
            if response.status in (301, 302, 303, 307):
                location = response.headers["location"]
                if location.startswith(REDIRECT_URI):
                    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
                    if "code" not in params or params.get("state") != state:
                        raise FlowError(f"redirect to client without code: {location[:200]}")
                    return params["code"]
                parts = urlsplit(location)
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                if parts.path.endswith("/dev-login"):
                    # the development login form: post the user name with the state
                    login_state = parse_qs(parts.query)["state"][0]
                    response = await self._post(
                        conn, parts.path, {"state": login_state, "username": username}, cookies
                    )
                else:
                    response = await self._get(conn, target, cookies)
            elif response.status == 200 and b"<form" in response.body:
                response = await self._submit_consent(conn, response, cookies)
            else:
                raise FlowError(f"login step: {response.status} {response.body[:300]!r}")
        raise FlowError("login: too many steps")

    async def _submit_consent(
        self, conn: Connection, page: Response, cookies: dict[str, str]
    ) -> Response:
        sys.path.insert(0, str(REPO))
        from tests.e2e.useragent import parse_forms

        for candidate in parse_forms(page.body.decode("utf-8", "replace")):
            for button in candidate.buttons:
                if button.says(("approve", "allow", "confirm", "continue", "yes", "accept")):
                    fields = dict(candidate.values(button))
                    path = urlsplit(candidate.action).path or "/"
                    return await self._post(conn, path, fields, cookies)
        raise FlowError(f"no consent form to approve: {page.body[:300]!r}")

    async def _get(self, conn: Connection, target: str, cookies: dict[str, str]) -> Response:
        response = await conn.request(
            build_request("GET", target, self.netloc, _cookie_header(cookies))
        )
        _keep_cookies(response, cookies)
        return response

    async def _post(
        self, conn: Connection, path: str, fields: dict[str, str], cookies: dict[str, str]
    ) -> Response:
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self.public_url,
            **_cookie_header(cookies),
        }
        response = await conn.request(
            build_request("POST", path, self.netloc, headers, form(fields))
        )
        _keep_cookies(response, cookies)
        return response

    async def codes(self, n: int, parallel: int = 8) -> list[str]:
        """``n`` fresh authorization codes, from ``parallel`` concurrent logins."""
        out: list[str] = []

        async def worker(w: int) -> None:
            conn = await Connection.open(self.host, self.port)
            i = 0
            while len(out) < n:
                out.append(await self.login(conn, f"bench{w}-{i}"))
                i += 1
            conn.close()

        await asyncio.gather(*(worker(w) for w in range(parallel)))
        return out[:n]

    def code_request(self, code: str) -> bytes:
        return self._token_request(
            grant_type="authorization_code",
            code=code,
            redirect_uri=REDIRECT_URI,
            client_id=self.client_id,
            code_verifier=VERIFIER,
            resource=self.resource,
        )

    def refresh_request(self, refresh_token: str) -> bytes:
        return self._token_request(
            grant_type="refresh_token", refresh_token=refresh_token, client_id=self.client_id
        )

    def _token_request(self, **fields: str) -> bytes:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return build_request("POST", "/oauth/token", self.netloc, headers, form(fields))

    async def tokens(self) -> dict[str, Any]:
        """One login and code redemption: the token response (access and refresh token)."""
        conn = await Connection.open(self.host, self.port)
        code = await self.login(conn, "bench")
        response = await conn.request(self.code_request(code))
        conn.close()
        if response.status != 200:
            raise FlowError(f"token: {response.status} {response.body[:300]!r}")
        return json.loads(response.body)


def _cookie_header(cookies: dict[str, str]) -> dict[str, str]:
    if not cookies:
        return {}
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}


def _keep_cookies(response: Response, cookies: dict[str, str]) -> None:
    header = response.headers.get("set-cookie")
    if not header:
        return
    # Response joins repeated headers with ", "; cookie values here have no commas
    for item in header.split(", "):
        pair = item.split(";", 1)[0]
        if "=" in pair:
            name, value = pair.split("=", 1)
            cookies[name.strip()] = value.strip()


# oidc-provider


OIDC_CLIENT_ID = "bench-public"


def oidc_clients_env() -> str:
    """The OIDC_CLIENTS value: one public client (PKCE, rotating refresh tokens), ES256 id_tokens."""
    return json.dumps(
        [
            {
                "client_id": OIDC_CLIENT_ID,
                "redirect_uris": [REDIRECT_URI],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "none",
                "id_token_signed_response_alg": "ES256",
            }
        ]
    )


def oidc_jwks_env() -> str:
    """OIDC_JWKS: one private P-256 key, so oidc-provider signs with ES256 like authproxy."""
    from jwcrypto.jwk import JWK

    key = JWK.generate(kty="EC", crv="P-256")
    private = json.loads(key.export_private())
    private.update(use="sig", alg="ES256")
    return json.dumps({"keys": [private]})


async def oidc_refresh_tokens(issuer: str, n: int) -> list[str]:
    """``n`` refresh tokens of separate logins at oidc-provider (user agent + code exchange)."""
    sys.path.insert(0, str(REPO))
    import httpx2

    from tests.e2e.useragent import UserAgent, callback_params

    out: list[str] = []
    async with httpx2.AsyncClient(timeout=10) as http:
        for i in range(n):
            state = secrets.token_urlsafe(8)
            url = (
                issuer
                + "/auth?"
                + urlencode(
                    {
                        "response_type": "code",
                        "client_id": OIDC_CLIENT_ID,
                        "redirect_uri": REDIRECT_URI,
                        "scope": "openid email profile",
                        "state": state,
                        "code_challenge": challenge(VERIFIER),
                        "code_challenge_method": "S256",
                    }
                )
            )
            async with UserAgent() as agent:
                landed = await agent.login(url, f"user{i}", "pass")
            params = callback_params(landed)
            if "code" not in params:
                raise FlowError(f"oidc-provider login: {landed[:300]}")
            response = await http.post(
                issuer + "/token",
                data={
                    "grant_type": "authorization_code",
                    "code": params["code"],
                    "redirect_uri": REDIRECT_URI,
                    "client_id": OIDC_CLIENT_ID,
                    "code_verifier": VERIFIER,
                },
            )
            if response.status_code != 200 or "refresh_token" not in response.json():
                raise FlowError(
                    f"oidc-provider token: {response.status_code} {response.text[:300]}"
                )
            out.append(response.json()["refresh_token"])
    return out


def oidc_refresh_request(netloc: str, refresh_token: str) -> bytes:
    return build_request(
        "POST",
        "/token",
        netloc,
        {"Content-Type": "application/x-www-form-urlencoded"},
        form(
            {
                "grant_type": "refresh_token",
                "refresh_token": refresh_token,
                "client_id": OIDC_CLIENT_ID,
            }
        ),
    )
