"""Assemble a real deployment on loopback: oidc-provider, an MCP server, authproxy under twistd.

authproxy's keys are laid out as a Kubernetes Secret mount (``..data`` symlink), so the
scenarios can rotate them the way kubelet does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata

from authproxy.testing import KubeletDir, ec_pem, hmac_secret
from tests import processes as procs
from tests.e2e.token_storage import MemoryTokenStorage
from tests.e2e.useragent import BrowserLogin, UserAgent

T = TypeVar("T")
CLIENT_REDIRECT = "http://127.0.0.1:33418/callback"
IDP_CLIENT_SECRET = "e2e-upstream-secret"


@attrs.define
class KeyDirs:
    """authproxy's signing-key and HMAC directories, each a kubelet-style Secret mount."""

    keys: KubeletDir
    hmac: KubeletDir
    key_pems: list[bytes]
    hmac_secret: bytes

    @classmethod
    def create(cls, root: Path) -> KeyDirs:
        dirs = cls(
            KubeletDir(str(root / "keys")),
            KubeletDir(str(root / "hmac")),
            [ec_pem()],
            hmac_secret(),
        )
        dirs.publish()
        return dirs

    def publish(self) -> None:
        self.keys.publish({f"key-{i}.pem": pem for i, pem in enumerate(self.key_pems)})
        self.hmac.publish({"hmac-0": self.hmac_secret})

    def rotate(self, keep: int = 3) -> None:
        """A new active key; the previous ones stay as verify-only keys (``keep`` in all),
        as the README's procedure keeps them for the longest token lifetime."""
        self.key_pems = [ec_pem(), *self.key_pems][:keep]
        self.publish()


@attrs.define
class Authproxy:
    """authproxy as a real process (``twistd -n authproxy --config ...``)."""

    config_path: Path
    port: int
    log_dir: Path
    process: procs.RunningProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = procs.start_process(
            procs.twistd_authproxy(self.config_path),
            cwd=procs.REPO_ROOT,
            ready_url=self.url + "/ready",
            timeout=30,
            name="authproxy",
            log_dir=self.log_dir,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    """A TOML file from nested dicts (values: str, int, list of str, dict of str)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        lines.append(f"[{prefix}]")
        nested = []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((key, value))
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                nested.extend((key, v) for v in value)  # an array of tables
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        for key, value in nested:
            array = isinstance(table[key], list)
            emit(f"[{prefix}.{key}]" if array else f"{prefix}.{key}", value)

    for name, table in sections.items():
        emit(name, table)
    path.write_text("\n".join(lines) + "\n")
    return path


@attrs.define
class Deployment:
    idp: procs.OIDCProvider
    backend: procs.MCPServerProcess
    proxy: Authproxy
    keys: KeyDirs

    @property
    def mcp_url(self) -> str:
        path = "/sse" if self.backend.transport == "sse" else "/mcp"
        return self.proxy.url + path

    def stop(self) -> None:
        self.proxy.stop()
        self.backend.stop()
        self.idp.stop()


def upstream_secret_file(root: Path) -> Path:
    """authproxy's client secret at the IdP, in a file as the configuration wants it."""
    secret_file = root / "upstream-secret"
    if not secret_file.exists():
        secret_file.write_text(IDP_CLIENT_SECRET)
        secret_file.chmod(0o400)
    return secret_file


def idp_client(public_url: str) -> procs.OIDCClient:
    """authproxy's registration at the IdP, for an authproxy reached at ``public_url``."""
    return procs.OIDCClient("authproxy", IDP_CLIENT_SECRET, (public_url + "/oauth/callback",))


def authproxy_sections(
    root: Path,
    *,
    port: int,
    public_url: str,
    idp: procs.OIDCProvider,
    backend: procs.MCPServerProcess,
    keys: KeyDirs,
    access_token_lifespan: str = "15m",
    header_strategy: str = "replace",
    issuer: str = "",
) -> dict[str, dict[str, Any]]:
    """authproxy's configuration: listening on ``port``, reached by clients at ``public_url``
    (and ``issuer`` as its issuer identifier, when given)."""
    sections: dict[str, dict[str, Any]] = {
        "server": {"listen": [f"tcp:{port}:interface=127.0.0.1"], "public_url": public_url},
        "backend": {"url": backend.base_url, "transport": backend.transport},
        "auth_server": {
            "signing_keys_dir": keys.keys.path,
            "hmac_secrets_dir": keys.hmac.path,
            "access_token_lifespan": access_token_lifespan,
        },
        "upstream": {
            "type": "oidc",
            "issuer_url": idp.issuer,
            "client_id": "authproxy",
            "client_secret_file": str(upstream_secret_file(root)),
            "scopes": ["openid", "email", "profile", "offline_access"],
        },
        "upstream_token": {"header_strategy": header_strategy},
    }
    if issuer:
        sections["auth_server"]["issuer"] = issuer
    return sections


def deploy(
    root: Path,
    transport: str = "streamable-http",
    *,
    access_token_lifespan: str = "15m",
    idp_access_ttl: int | None = None,
    header_strategy: str = "replace",
    extra_config: dict[str, dict[str, Any]] | None = None,
    issuer_path: str = "",
) -> Deployment:
    """Start the IdP, the MCP server and authproxy in front of it (its issuer
    ``public_url + issuer_path``).

    ``extra_config`` adds keys to authproxy's configuration, section by section (a nested
    dict is a sub-table, e.g. ``{"auth_server": {"client_metadata_documents": {...}}}``).
    """
    port = procs.free_port()
    proxy_url = f"http://127.0.0.1:{port}"
    idp = procs.start_oidc_provider(
        [idp_client(proxy_url)], access_ttl=idp_access_ttl, log_dir=root
    )
    backend = procs.start_mcp_server(transport, log_dir=root)
    keys = KeyDirs.create(root)
    sections = authproxy_sections(
        root,
        port=port,
        public_url=proxy_url,
        idp=idp,
        backend=backend,
        keys=keys,
        access_token_lifespan=access_token_lifespan,
        header_strategy=header_strategy,
        issuer=proxy_url + issuer_path if issuer_path else "",
    )
    for name, table in (extra_config or {}).items():
        sections.setdefault(name, {}).update(table)
    proxy = Authproxy(write_config(root / "authproxy.toml", sections), port, root)
    proxy.start()
    return Deployment(idp, backend, proxy, keys)


class Deployed(Protocol):
    """What an MCP user needs of a deployment: one replica (:class:`Deployment`) or several."""

    @property
    def mcp_url(self) -> str: ...

    @property
    def backend(self) -> procs.MCPServerProcess: ...


@attrs.define
class MCPUser:
    """An MCP SDK client with its OAuth provider, token storage and browser stand-in.

    ``transport`` (default: straight to the URL) makes each HTTP client's transport, the
    browser's and the SDK's: replicas put their load balancer there.
    """

    deployment: Deployed
    transport: Callable[[], httpx2.AsyncBaseTransport] | None = None
    storage: MemoryTokenStorage = attrs.field(factory=MemoryTokenStorage)
    login: BrowserLogin | None = None
    oauth: OAuthClientProvider | None = None
    #: A client ID metadata document's URL to use as client_id instead of registering, when
    #: the server supports it. Set past the SDK's constructor, which insists on https; the
    #: tests serve the document on http loopback (authproxy's ``allow_loopback``).
    client_metadata_url: str | None = None

    def provider(self, agent: UserAgent) -> OAuthClientProvider:
        if self.oauth is None:
            self.login = BrowserLogin(agent, "alice", procs.OIDC_PASSWORD)
            self.oauth = OAuthClientProvider(
                server_url=self.deployment.mcp_url,
                client_metadata=OAuthClientMetadata(
                    redirect_uris=[CLIENT_REDIRECT],  # type: ignore[list-item]
                    client_name="authproxy e2e",
                    grant_types=["authorization_code", "refresh_token"],
                    response_types=["code"],
                    token_endpoint_auth_method="none",
                ),
                storage=self.storage,
                redirect_handler=self.login.redirect_handler,
                callback_handler=self.login.callback_handler,
            )
            self.oauth.context.client_metadata_url = self.client_metadata_url
        else:
            assert self.login is not None
            self.login.agent = agent
        return self.oauth

    def http_client(self, **kwargs: Any) -> httpx2.AsyncClient:
        """An HTTP client over this user's ``transport``."""
        transport = self.transport() if self.transport is not None else None
        return httpx2.AsyncClient(transport=transport, **kwargs)

    async def session(self, use: Callable[[Client], Awaitable[T]]) -> T:
        """Open an MCP session through authproxy (logging in when needed) and run ``use``."""
        browser = self.http_client(timeout=10.0, follow_redirects=False)
        async with UserAgent(client=browser) as agent:
            oauth = self.provider(agent)
            if self.deployment.backend.transport == "sse":
                transport: Any = sse_client(self.deployment.mcp_url, auth=oauth)
                async with Client(transport) as client:
                    return await use(client)
            http = self.http_client(auth=oauth, timeout=httpx2.Timeout(30, read=300))
            async with (
                http,
                Client(streamable_http_client(self.deployment.mcp_url, http_client=http)) as client,
            ):
                return await use(client)
