"""A fake upstream IdP (OpenID provider and OAuth2 server) as a twisted.web Resource.

Drive it with ``treq.testing.StubTreq(FakeIdP(clock))``: discovery, authorize, token, jwks and
userinfo, with public attributes as switches for the failure modes tests need. Re-exported
from ``authproxy.testing``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from jwcrypto.jwk import JWK
from jwcrypto.jws import JWS
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_key(kty: str = "EC") -> JWK:
    """A fresh private signing key (EC P-256, RSA 2048 or Ed25519) with its thumbprint as kid."""
    if kty == "RSA":
        key = JWK.generate(kty="RSA", size=2048)
    elif kty == "OKP":
        key = JWK.generate(kty="OKP", crv="Ed25519")
    else:
        key = JWK.generate(kty="EC", crv="P-256")
    return JWK(**{**key.export(as_dict=True), "kid": key.thumbprint()})


def key_alg(key: JWK) -> str:
    return {"RSA": "RS256", "OKP": "EdDSA"}.get(key["kty"], "ES256")


def sign_jwt(
    claims: dict[str, Any], key: JWK | None, alg: str | None = None, kid: Any = ...
) -> str:
    """A compact JWS of ``claims``; ``alg="none"`` gives an unsigned token."""
    alg = alg or (key_alg(key) if key is not None else "none")
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is ...:
        kid = key.get("kid") if key is not None else None
    if kid is not None:
        header["kid"] = kid
    payload = json.dumps(claims).encode()
    if alg == "none" or key is None:
        return f"{_b64(json.dumps(header).encode())}.{_b64(payload)}."
    jws = JWS(payload)
    jws.add_signature(key, alg=alg, protected=json.dumps(header))
    return jws.serialize(compact=True)


class FakeIdP(Resource):
    """An in-memory IdP. Paths: ``/.well-known/openid-configuration``, ``/authorize``,
    ``/token``, ``/jwks``, ``/userinfo`` (the host part of the URL is ignored).

    Switches (plain attributes): ``discovery_status``, ``discovery_overrides``; ``hang``
    (paths that never answer); ``token_status`` + ``token_error`` (the code grant answers an
    error); ``refresh_error``; ``form_encoded`` (token answers as a form, like GitHub);
    ``token_type``; ``expires_in`` (None omits it); ``issue_id_token``; ``id_token_claims``
    (overrides, None removes a claim); ``id_token_alg``; ``sign_with`` (a key not in the JWKS);
    ``rotate_refresh_tokens``; ``userinfo`` (the userinfo answer, ``{subject}`` substituted);
    ``userinfo_status``; ``revocation_status`` + ``revocation_error`` (``/revoke`` answers an
    error). ``requests`` lists ``(method, path)`` of every request seen; ``revocations``
    the forms (and client authentication) that reached ``/revoke``.
    """

    isLeaf = True

    def __init__(
        self,
        clock: IReactorTime,
        issuer: str = "https://idp.example.test",
        *,
        client_id: str = "authproxy",
        client_secret: str | None = "idp-client-secret",
        key_type: str = "EC",
    ) -> None:
        super().__init__()
        self.clock = clock
        self.issuer = issuer
        self.clients: dict[str, str | None] = {client_id: client_secret}
        self.keys: list[JWK] = [generate_key(key_type)]
        self.discovery_status = 200
        self.discovery_overrides: dict[str, Any] = {}
        self.hang: set[str] = set()
        self.token_status = 200
        self.token_error: str | None = None
        self.refresh_error: str | None = None
        self.refresh_status = 400
        self.form_encoded = False
        self.token_type = "Bearer"
        self.expires_in: int | None = 3600
        self.issue_id_token = True
        self.id_token_claims: dict[str, Any] = {}
        self.id_token_alg: str | None = None
        self.id_token_kid: Any = ...
        self.sign_with: JWK | None = None
        self.rotate_refresh_tokens = True
        self.issue_refresh_token = True
        self.userinfo: dict[str, Any] | None = None
        self.userinfo_status = 200
        self.revocation_status = 200
        self.revocation_error: str | None = None
        self.revocations: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.hung: list[Request] = []
        self.token_requests: list[dict[str, Any]] = []
        self.userinfo_requests: list[dict[str, Any]] = []
        self.codes: dict[str, dict[str, Any]] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.access_tokens: dict[str, str] = {}
        self.issued: list[str] = []  # every token and code handed out (for leak checks)

    # -- helpers for tests ------------------------------------------------------------------
    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return sum(1 for _, p in self.requests if p == path)

    def rotate_keys(self, kty: str = "EC", keep_old: bool = False) -> JWK:
        """A new active signing key; the old ones stay published only with ``keep_old``."""
        key = generate_key(kty)
        self.keys = [key, *self.keys] if keep_old else [key]
        return key

    def approve(
        self,
        authorization_url: str,
        subject: str = "alice",
        *,
        name: str | None = "Alice",
        email: str | None = "alice@example.test",
    ) -> dict[str, str]:
        """The user logs in at the authorization URL: the callback's query arguments."""
        params = dict(parse_qsl(urlsplit(authorization_url).query))
        assert params.get("response_type") == "code", params
        assert params.get("client_id") in self.clients, params
        assert params.get("code_challenge_method") == "S256", params
        code = self._token()
        self.codes[code] = {
            "client_id": params["client_id"],
            "redirect_uri": params.get("redirect_uri"),
            "code_challenge": params.get("code_challenge"),
            "nonce": params.get("nonce"),
            "scope": params.get("scope"),
            "subject": subject,
            "name": name,
            "email": email,
        }
        return {"code": code, "state": params.get("state", ""), "iss": self.issuer}

    def deny(self, authorization_url: str, error: str = "access_denied") -> dict[str, str]:
        """The user (or IdP) refuses: the callback's query arguments."""
        params = dict(parse_qsl(urlsplit(authorization_url).query))
        return {"error": error, "error_description": "The user said no", "state": params["state"]}

    def answer_hung(self) -> int:
        """Answer the hung requests now, as if the IdP had been slow; how many were answered.

        Call ``StubTreq.flush()`` afterwards so the client sees the answers.
        """
        hung, self.hung = self.hung, []
        answered = 0
        for request in hung:
            if request.finished or getattr(request, "_disconnected", False):
                continue
            handler = self._handlers().get(request.path.decode())
            assert handler is not None
            request.write(handler(request))
            request.finish()
            answered += 1
        return answered

    def id_token(self, claims: dict[str, Any]) -> str:
        """An id_token with ``claims`` signed as the switches say."""
        key = self.sign_with or self.keys[0]
        token = sign_jwt(claims, key, self.id_token_alg, self.id_token_kid)
        self.issued.append(token)
        return token

    def _token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.issued.append(token)
        return token

    def _now(self) -> int:
        return int(self.clock.seconds())

    # -- the Resource ------------------------------------------------------------------------
    def render(self, request: Request) -> Any:
        path = request.path.decode()
        method = request.method.decode()
        self.requests.append((method, path))
        if path in self.hang:
            self.hung.append(request)
            return NOT_DONE_YET
        handler = self._handlers().get(path)
        if handler is None:
            return self._json(request, 404, {"error": "not_found"})
        return handler(request)

    def _handlers(self) -> dict[str, Callable[[Request], bytes]]:
        return {
            "/.well-known/openid-configuration": self._discovery,
            "/authorize": self._authorize,
            "/token": self._token_endpoint,
            "/jwks": self._jwks,
            "/userinfo": self._userinfo,
            "/revoke": self._revoke,
        }

    def _json(self, request: Request, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader("Cache-Control", "no-store")
        if self.form_encoded and request.path == b"/token":
            request.setHeader("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
            return urlencode({k: v for k, v in body.items() if v is not None}).encode()
        request.setHeader("Content-Type", "application/json")
        return json.dumps(body).encode()

    def _discovery(self, request: Request) -> bytes:
        if self.discovery_status != 200:
            return self._json(request, self.discovery_status, {"error": "unavailable"})
        document = {
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "jwks_uri": self.issuer + "/jwks",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "revocation_endpoint": self.issuer + "/revoke",
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "authorization_response_iss_parameter_supported": True,
        }
        document.update(self.discovery_overrides)
        return self._json(request, 200, document)

    def _jwks(self, request: Request) -> bytes:
        keys = [key.export_public(as_dict=True) for key in self.keys]
        return self._json(request, 200, {"keys": keys})

    def _authorize(self, request: Request) -> bytes:
        url = request.uri.decode()
        args = self.approve(url)
        params = dict(parse_qsl(urlsplit(url).query))
        request.setResponseCode(302)
        request.setHeader("Location", params["redirect_uri"] + "?" + urlencode(args))
        return b""

    def _client(self, request: Request, form: dict[str, str], record: dict[str, Any]) -> str | None:
        """The authenticated client_id, or None; ``record`` notes the method used."""
        auth = request.getHeader("authorization")
        if auth and auth.lower().startswith("basic "):
            pair = base64.b64decode(auth[6:]).decode()
            client_id, _, secret = pair.partition(":")
            client_id, secret = unquote(client_id), unquote(secret)
            method = "client_secret_basic"
        elif "client_secret" in form:
            client_id, secret, method = (
                form.get("client_id", ""),
                form["client_secret"],
                "client_secret_post",
            )
        else:
            client_id, secret, method = form.get("client_id", ""), None, "none"
        record["auth_method"] = method
        if client_id not in self.clients or self.clients[client_id] != secret:
            return None
        return client_id

    def _token_endpoint(self, request: Request) -> bytes:
        form = {k.decode(): v[0].decode() for k, v in (request.args or {}).items()}
        record = {"form": form, "accept": request.getHeader("accept"), "auth_method": None}
        self.token_requests.append(record)
        client_id = self._client(request, form, record)
        if client_id is None:
            return self._json(request, 401, {"error": "invalid_client"})
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._code_grant(request, form, client_id)
        if grant == "refresh_token":
            return self._refresh_grant(request, form)
        return self._json(request, 400, {"error": "unsupported_grant_type"})

    def _tokens(self, subject: str, refresh_token: str | None) -> dict[str, Any]:
        access_token = self._token()
        self.access_tokens[access_token] = subject
        body: dict[str, Any] = {"access_token": access_token, "token_type": self.token_type}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if refresh_token is not None:
            self.refresh_tokens[refresh_token] = subject
            body["refresh_token"] = refresh_token
        return body

    def _code_grant(self, request: Request, form: dict[str, str], client_id: str) -> bytes:
        if self.token_error is not None:
            return self._json(request, self.token_status, {"error": self.token_error})
        grant = self.codes.pop(form.get("code", ""), None)
        if grant is None or grant["client_id"] != client_id:
            return self._json(request, 400, {"error": "invalid_grant"})
        if grant["redirect_uri"] != form.get("redirect_uri"):
            return self._json(request, 400, {"error": "invalid_grant"})
        verifier = form.get("code_verifier", "")
        challenge = _b64(hashlib.sha256(verifier.encode()).digest())
        if challenge != grant["code_challenge"]:
            return self._json(request, 400, {"error": "invalid_grant"})
        subject = grant["subject"]
        body = self._tokens(subject, self._token() if self.issue_refresh_token else None)
        if self.issue_id_token:
            now = self._now()
            claims: dict[str, Any] = {
                "iss": self.issuer,
                "sub": subject,
                "aud": client_id,
                "exp": now + 3600,
                "iat": now,
            }
            for name in ("nonce", "name", "email"):
                if grant[name] is not None:
                    claims[name] = grant[name]
            claims.update(self.id_token_claims)
            claims = {k: v for k, v in claims.items() if v is not None}
            body["id_token"] = self.id_token(claims)
        return self._json(request, 200, body)

    def _refresh_grant(self, request: Request, form: dict[str, str]) -> bytes:
        if self.refresh_error is not None:
            return self._json(request, self.refresh_status, {"error": self.refresh_error})
        old = form.get("refresh_token", "")
        subject = self.refresh_tokens.get(old)
        if subject is None:
            return self._json(request, 400, {"error": "invalid_grant"})
        new = None
        if self.rotate_refresh_tokens:
            del self.refresh_tokens[old]
            new = self._token()
        return self._json(request, 200, self._tokens(subject, new))

    def _revoke(self, request: Request) -> bytes:
        """RFC 7009: forget the token (refresh or access), 200 even when it is unknown."""
        form = {k.decode(): v[0].decode() for k, v in (request.args or {}).items()}
        record: dict[str, Any] = {"form": form, "auth_method": None, "uri": request.uri.decode()}
        self.revocations.append(record)
        if self._client(request, form, record) is None:
            return self._json(request, 401, {"error": "invalid_client"})
        if self.revocation_error is not None:
            return self._json(request, self.revocation_status, {"error": self.revocation_error})
        token = form.get("token", "")
        self.refresh_tokens.pop(token, None)
        self.access_tokens.pop(token, None)
        request.setResponseCode(self.revocation_status)
        return b""

    def _userinfo(self, request: Request) -> bytes:
        self.userinfo_requests.append(
            {
                "method": request.method.decode(),
                "headers": {
                    k.decode().lower(): v[0].decode()
                    for k, v in request.requestHeaders.getAllRawHeaders()
                },
            }
        )
        auth = request.getHeader("authorization") or ""
        subject = self.access_tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if subject is None:
            return self._json(request, 401, {"error": "invalid_token"})
        if self.userinfo_status != 200:
            return self._json(request, self.userinfo_status, {"error": "server_error"})
        document = self.userinfo or {
            "sub": subject,
            "id": subject,
            "name": "Alice",
            "email": "alice@example.test",
        }
        return self._json(request, 200, document)
