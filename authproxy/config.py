"""The configuration file: frozen attrs classes, structured by cattrs, validated as a whole.

Loading happens in three steps:

1. cattrs structures the TOML/JSON mapping into the classes below. Durations, sizes and
   rates are parsed here, once, into their value types (seconds, bytes, ``Rate``);
   unknown keys, wrong types and unparsable values are reported with their field path.
2. ``validate_config`` checks the rules that span fields, the enumerated (``Literal``)
   fields and the per-type upstream rules (asked of authproxy.upstream.registry), and
   fills the derived defaults (issuer, redirect_uri, allowed_audiences, backend path).
   It reads nothing outside the mapping: no files, no environment.
3. ``startup_check`` looks at the machine: it parses the listen endpoints (an ``ssl:``
   endpoint reads its key files), reads every signing key and HMAC secret file (each bad
   one is a line of its own), and reads the upstream client secret from its file or
   environment variable and the Redis password file. It never connects anywhere: not to
   the IdP, not to Redis, and it listens on nothing.

``config_from_mapping`` and ``load_config`` run all three and collect every problem, so
an operator fixes a file in one round: ``ConfigError.problems`` holds one line per
problem, each starting with the field path.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NewType, get_args, get_origin
from urllib.parse import SplitResult, urlsplit

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError

from authproxy.http.loopback import is_loopback_host
from authproxy.storage.factory import STORAGE_TYPES

Duration = NewType("Duration", float)
Size = NewType("Size", int)

# The enumerated fields. Structuring only takes the string (normalising the case where the
# field ignores it); validation checks membership, so a bad value is reported along with
# every other problem of the file.
Transport = Literal["streamable-http", "sse"]
Consent = Literal["remember", "always", "skip"]
TokenEndpointAuthMethod = Literal["client_secret_basic", "client_secret_post"]
HttpMethod = Literal["GET", "POST"]
HeaderStrategy = Literal["replace", "custom", "none"]
StorageType = Literal["memory", "redis"]
LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warn", "warning", "error", "critical"]
_CASE_FOLD: dict[Any, Any] = {HttpMethod: str.upper, LogLevel: str.lower}

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
}
_SIZE_RE = re.compile(r"(\d+)\s*([KMG]i?B|B)")


def _no_unit(value: object, what: str, example: str) -> ValueError:
    """The error for a bare number: it could mean any unit, so the file must say which."""
    return ValueError(f'{value!r} has no unit: write the {what} with one (e.g. "{example}")')


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h30m"``, ``"7d"`` -> seconds.

    A bare number (``30``) is refused: seconds or milliseconds would both be plausible.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _no_unit(value, "duration", f"{value:g}s")
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration")
    text = value.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        raise _no_unit(value, "duration", f"{text}s")
    pos, total = 0, 0.0
    for match in _DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f'"{value}" is not a duration (examples: 30s, 5m, 1h30m, 7d)')
    return total


def parse_size(value: object) -> int:
    """``"512KiB"``, ``"4MiB"``, ``"100B"`` -> bytes.

    A bare number (``4``) is refused: ``max_request_body = 4`` once silently meant 4 bytes.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise _no_unit(value, "size", f"{value:g}MiB")
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            raise _no_unit(value, "size", f"{text}MiB")
        match = _SIZE_RE.fullmatch(text)
        if match:
            return int(match.group(1)) * _SIZE_UNITS[match.group(2)]
    raise ValueError(f'"{value}" is not a size (examples: 512KiB, 4MiB)')


_RATE_RE = re.compile(r"(\d+)/(s|sec|second|m|min|minute|h|hour)")
_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_RATE_PERIODS.update({"h": 3600, "hour": 3600})


def parse_rate(text: str) -> tuple[int, float]:
    match = _RATE_RE.fullmatch(text.strip())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f'"{text}" is not a rate (examples: 5/min, 100/hour)')
    return int(match.group(1)), float(_RATE_PERIODS[match.group(2)])


class Rate(str):
    """A rate limit as the file writes it (``"5/min"``): ``events`` per ``period`` seconds.

    Parsed once, when the configuration is structured; it is still the string it was
    written as, so it compares and prints as the operator wrote it.
    """

    events: int
    period: float

    def __new__(cls, text: str) -> Rate:
        count, period = parse_rate(text)
        rate = super().__new__(cls, text)
        rate.events, rate.period = count, period
        return rate


def format_duration(seconds: float) -> str:
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


@attrs.frozen(repr=False)
class Secret:
    """A secret value that never shows itself in a repr, str or log line."""

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(<redacted>)"

    __str__ = __repr__


@attrs.frozen
class ServerConfig:
    public_url: str
    listen: tuple[str, ...] = ("tcp:8080:interface=127.0.0.1",)
    trusted_proxies: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    # Host names served besides public_url's (http/hosts.py); ["*"]: any
    allowed_hosts: tuple[str, ...] = ()
    max_request_body: Size = Size(4 * 1024 * 1024)
    # Connection bounds (bounded_channel.py, connection_limits.py)
    header_timeout: Duration = Duration(10.0)
    idle_timeout: Duration = Duration(60.0)
    max_connections: int = 4096
    max_connections_per_source: int = 256
    # SIGTERM: how long open streams may run on before they are ended (ops/shutdown.py)
    shutdown_grace: Duration = Duration(25.0)
    # /metrics only on this endpoint (a Site of its own), not on ``listen``; None: on ``listen``
    metrics_listen: str | None = None


@attrs.frozen
class BackendConfig:
    url: str
    transport: Transport = "streamable-http"
    path: str = ""  # derived from transport when empty
    command: tuple[str, ...] | None = None
    connect_timeout: Duration = Duration(5.0)
    response_timeout: Duration = Duration(60.0)
    max_connections: int = 256
    max_connections_per_grant: int = 16
    session_idle_timeout: Duration = Duration(3600.0)
    max_sessions: int = 10000
    max_sessions_per_grant: int = 32


@attrs.frozen
class RegistrationConfig:
    enabled: bool = True  # false: /oauth/register refuses, metadata omits it (CIMD only)
    rate: Rate = Rate("5/min")
    max_clients: int = 5000  # a maximal registration holds ~12 KiB (benchmarks/memory_caps.py)
    unused_client_ttl: Duration = Duration(30 * 86400.0)

    @property
    def rate_count(self) -> int:
        return self.rate.events

    @property
    def rate_period(self) -> float:
        return self.rate.period


@attrs.frozen
class ClientMetadataDocumentsConfig:
    """OAuth Client ID Metadata Documents: an https URL as client_id (authserver/cimd)."""

    enabled: bool = True
    allowed_hosts: tuple[str, ...] = ()  # exact or "*.example.com"; empty: any public host
    max_document_size: Size = Size(5 * 1024)
    fetch_timeout: Duration = Duration(5.0)
    cache_max_age: Duration = Duration(86400.0)  # the document's Cache-Control may say less
    allow_loopback: bool = False  # development and tests: http://127.0.0.1 / localhost too


@attrs.frozen
class AuthServerConfig:
    issuer: str = ""  # default: server.public_url
    signing_keys_dir: str | None = None
    hmac_secrets_dir: str | None = None
    signing_key_files: tuple[str, ...] = ()
    hmac_secret_files: tuple[str, ...] = ()
    access_token_lifespan: Duration = Duration(15 * 60.0)
    refresh_token_lifespan: Duration = Duration(7 * 86400.0)
    auth_code_lifespan: Duration = Duration(5 * 60.0)
    scopes_supported: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    allowed_audiences: tuple[str, ...] = ()  # default: public_url + backend.path
    required_scopes: tuple[str, ...] = ()
    refresh_reuse_grace: Duration = Duration(30.0)
    consent: Consent = "remember"
    consent_lifespan: Duration = Duration(30 * 86400.0)
    authorize_rate: Rate = Rate("120/min")  # /oauth/authorize requests per source address
    # /oauth/token and /oauth/revoke requests (together) per client and per source address
    token_rate: Rate = Rate("60/min")
    token_source_rate: Rate = Rate("600/min")
    registration: RegistrationConfig = RegistrationConfig()
    client_metadata_documents: ClientMetadataDocumentsConfig = ClientMetadataDocumentsConfig()


@attrs.frozen
class UserinfoConfig:
    endpoint_url: str
    http_method: HttpMethod = "GET"
    additional_headers: dict[str, str] = attrs.field(factory=dict)
    subject_fields: tuple[str, ...] = ("sub", "id")
    name_fields: tuple[str, ...] = ("name", "login")
    email_fields: tuple[str, ...] = ("email",)


@attrs.frozen
class UpstreamConfig:
    type: str = "oidc"  # a name in authproxy.upstream.registry
    name: str = ""  # default: the type
    issuer_url: str | None = None
    client_id: str | None = None
    client_secret_file: str | None = None
    client_secret_env: str | None = None
    token_endpoint_auth_method: TokenEndpointAuthMethod = "client_secret_basic"
    redirect_uri: str = ""  # default: server.public_url + /oauth/callback
    scopes: tuple[str, ...] = ("openid", "offline_access", "email", "profile")
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None  # RFC 7009; oidc: default from discovery
    userinfo: UserinfoConfig | None = None
    # oidc and oauth2: extra authorization request parameters (Google's access_type =
    # "offline"); never the protocol's own (AUTHORIZE_PARAMS_RESERVED)
    authorize_params: dict[str, str] | None = None
    # oidc: the id_token claim naming the user (default "sub"; Entra ID's "oid")
    subject_claim: str | None = None
    timeout: Duration = Duration(10.0)
    # Resolved from client_secret_file / client_secret_env by startup_check; never in the file.
    client_secret: Secret | None = attrs.field(default=None, repr=False)


@attrs.frozen
class UpstreamTokenConfig:
    header_strategy: HeaderStrategy = "replace"
    custom_header: str = "X-Upstream-Authorization"


@attrs.frozen
class StorageConfig:
    type: StorageType = "memory"
    # Caps per collection, sized for worst-case memory (README, benchmarks/memory_caps.py)
    max_records: int = 100000  # users, and revoked access-token ids (small records)
    max_pending: int = 10000  # logins in progress, and authorization codes
    max_logins: int = 10000  # signed-in logins: token families and upstream token sessions
    max_refresh_tokens: int = 20000  # current and rotated refresh tokens; > max_logins
    sweep_interval: Duration = Duration(60.0)
    # type = "redis": where, and as whom (the password only ever from a file)
    url: str = ""
    password_file: str = ""
    key_prefix: str = "authproxy:"
    # with sentinels, url gives only the scheme (TLS or not) and the database
    sentinels: tuple[str, ...] = ()
    sentinel_master: str = ""
    # AUTH to the sentinels (their requirepass); TLS to them as to the data nodes (rediss://)
    sentinel_password_file: str = ""
    sentinel_password: Secret | None = attrs.field(default=None, repr=False)  # read at startup
    password: Secret | None = attrs.field(default=None, repr=False)  # read at startup
    # rediss:// only: the CA certificate (PEM) the server's certificate must chain to
    ca_file: str = ""
    ca_pem: bytes | None = attrs.field(default=None, repr=False)  # read at startup


@attrs.frozen
class LoggingConfig:
    format: LogFormat = "text"
    level: LogLevel = "info"
    access_log: bool = True


@attrs.frozen
class ScopeRule:
    """``[[proxy.scope_rules]]``: the scopes one MCP operation needs (proxy/scope_rules.py)."""

    method: str  # an exact MCP method, e.g. "tools/call"
    scopes: tuple[str, ...]
    name: str = "*"  # a glob (*, ?, [...]) on the tool or prompt name, or the resource URI


@attrs.frozen
class ProxyConfig:
    """``[proxy]``: how the protected resource describes itself and what its operations need."""

    resource_name: str = ""  # RFC 9728 resource_name; default: "MCP server at <host>"
    scope_rules: tuple[ScopeRule, ...] = ()


@attrs.frozen
class Config:
    server: ServerConfig
    backend: BackendConfig
    upstream: UpstreamConfig
    auth_server: AuthServerConfig = AuthServerConfig()
    proxy: ProxyConfig = ProxyConfig()
    upstream_token: UpstreamTokenConfig = UpstreamTokenConfig()
    storage: StorageConfig = StorageConfig()
    logging: LoggingConfig = LoggingConfig()


class ConfigError(Exception):
    """The file is unusable; ``problems`` has one line per problem, each naming the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _strict(kind: type, name: str) -> Any:
    def structure(value: object, _: type) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise ValueError(f"{value!r} is not {name}")
        if kind is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, kind):
            raise ValueError(f"{value!r} is not {name}")
        return value

    return structure


def _string_list(value: object, _: type) -> tuple[str, ...]:
    # A bare string is iterable too: "tcp:8080" must not become ("t", "c", "p", ...).
    if not isinstance(value, list | tuple):
        raise ValueError(f"{value!r} is not a list of strings")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} in the list is not a string")
    return tuple(value)


def _choice(value: object, type_: Any) -> str:
    text = _strict(str, "a string")(value, str)
    fold = _CASE_FOLD.get(type_)
    # A value that is not a choice stays as written, for the error line to quote.
    if fold is not None and fold(text) in get_args(type_):
        return fold(text)
    return text


def _rate(value: object, _: type) -> Rate:
    return Rate(_strict(str, "a string")(value, str))


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    converter.register_structure_hook(str, _strict(str, "a string"))
    converter.register_structure_hook(int, _strict(int, "an integer"))
    converter.register_structure_hook(float, _strict(float, "a number"))
    converter.register_structure_hook(bool, _strict(bool, "true or false"))
    converter.register_structure_hook_func(lambda t: t == tuple[str, ...], _string_list)
    converter.register_structure_hook(Duration, lambda v, _: Duration(parse_duration(v)))
    converter.register_structure_hook(Size, lambda v, _: Size(parse_size(v)))
    converter.register_structure_hook(Rate, _rate)
    converter.register_structure_hook_func(lambda t: get_origin(t) is Literal, _choice)
    return converter


_converter = _make_converter()


def _format_structure_error(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown key " + ", ".join(repr(k) for k in sorted(exc.extra_fields))
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, ValueError) and str(exc):
        return str(exc)
    if isinstance(exc, TypeError) and type_ is not None:
        return f"has the wrong type (expected {getattr(type_, '__name__', type_)})"
    return cattrs.v.format_exception(exc, type_)


def _structure_problems(exc: Exception) -> list[str]:
    problems = []
    for line in cattrs.transform_error(exc, path="$", format_exception=_format_structure_error):
        message, _, path = line.rpartition(" @ ")
        path = path.removeprefix("$").lstrip(".")
        path = re.sub(r"\[(\d+)\]", r"[\1]", path)
        if message.startswith("unknown key "):
            keys = message.removeprefix("unknown key ").split(", ")
            for key in keys:
                field = f"{path}.{key.strip(chr(39))}" if path else key.strip(chr(39))
                problems.append(f"{field}: unknown key")
            continue
        problems.append(f"{path or '(top level)'}: {message}")
    return problems


def _split(value: str) -> SplitResult | None:
    """``urlsplit`` that also checks the port; None for unparsable URLs."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        return None
    return parts


def check_base_url(value: str) -> str | None:
    """Why ``value`` is not a usable issuer / public URL, or None when it is."""
    parts = _split(value)
    if parts is None:
        return f'"{value}" is not a valid URL'
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f'"{value}" must be an absolute http(s) URL with a host'
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return f'"{value}" must not have a query or fragment'
    if value.endswith("/"):
        return f'"{value}" must not end with a slash'
    return _plain_http_problem(value, parts)


def _plain_http_problem(value: str, parts: SplitResult) -> str | None:
    """Why an http URL off loopback is refused (what it carries would travel in clear)."""
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return (
            f'"{value}" must use https (http is allowed only for localhost, 127.0.0.0/8 and [::1])'
        )
    return None


def check_url(value: str) -> str | None:
    """Why ``value`` is not an absolute http(s) URL without a fragment, or None when it is."""
    parts = _split(value)
    if parts is None:
        return f'"{value}" is not a valid URL'
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f'"{value}" must be an absolute http(s) URL'
    if parts.fragment:
        return f'"{value}" must not have a fragment'
    return None


def check_idp_url(value: str) -> str | None:
    """Why ``value`` is not a usable IdP URL, or None: ``check_url``, and https off loopback.

    Codes, client secrets and tokens travel to these URLs: plain http is only for an IdP on
    the same machine (a development or test IdP).
    """
    if (why := check_url(value)) is not None:
        return why
    return _plain_http_problem(value, urlsplit(value))


_BOUNDS = {
    "access_token_lifespan": (60.0, 86400.0),
    "refresh_token_lifespan": (3600.0, 30 * 86400.0),
    "auth_code_lifespan": (30.0, 600.0),
}


_CONNECTION_TIMEOUT_BOUNDS = {
    "header_timeout": (1.0, 300.0),
    "idle_timeout": (1.0, 86400.0),
    "shutdown_grace": (0.0, 3600.0),
}
MAX_CONNECTIONS_BOUNDS = (16, 1_000_000)


def _duration_problems(
    section: str, values: object, bounds: dict[str, tuple[float, float]]
) -> list[str]:
    """One line per duration field of ``values`` outside its (low, high) bounds."""
    problems = []
    for field, (low, high) in bounds.items():
        value = getattr(values, field)
        if not low <= value <= high:
            problems.append(
                f"{section}.{field}: {format_duration(value)} is outside "
                f"{format_duration(low)}..{format_duration(high)}"
            )
    return problems


def _connection_problems(server: ServerConfig) -> list[str]:
    problems = []
    problems.extend(_duration_problems("server", server, _CONNECTION_TIMEOUT_BOUNDS))
    low, high = MAX_CONNECTIONS_BOUNDS
    if not low <= server.max_connections <= high:
        problems.append(
            f"server.max_connections: {server.max_connections} is outside {low}..{high}"
        )
    if not 1 <= server.max_connections_per_source <= server.max_connections:
        problems.append(
            f"server.max_connections_per_source: {server.max_connections_per_source} is outside "
            "1..max_connections"
        )
    return problems


def alternatives(names: Sequence[str]) -> str:
    """``"a, b or c"``: the allowed values, the way the error lines name them."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _choice_problem(path: str, value: str, choices: Any, *, quoted: bool = False) -> list[str]:
    """The line for an enumerated field whose ``value`` is not one of ``Literal`` ``choices``."""
    allowed = get_args(choices)
    if value in allowed:
        return []
    names = [f'"{name}"' if quoted else name for name in allowed]
    return [f'{path}: "{value}" is not {alternatives(names)}']


def _validate(config: Config) -> tuple[Config, list[str]]:
    problems: list[str] = []
    server, backend, auth, upstream = (
        config.server,
        config.backend,
        config.auth_server,
        config.upstream,
    )

    if (why := check_base_url(server.public_url)) is not None:
        problems.append(f"server.public_url: {why}")
    if not server.listen:
        problems.append("server.listen: needs at least one endpoint")
    for i, cidr in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            problems.append(f'server.trusted_proxies[{i}]: "{cidr}" is not a CIDR')
    for i, origin in enumerate(server.allowed_origins):
        parts = _split(origin)
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            problems.append(f'server.allowed_origins[{i}]: "{origin}" is not an origin')
    for i, host in enumerate(server.allowed_hosts):
        if host != "*" and not _is_host_name(host):
            problems.append(
                f'server.allowed_hosts[{i}]: "{host}" is not a host name or IP address '
                '(no scheme, port or path; "*" for any)'
            )
    problems.extend(_connection_problems(server))
    if server.metrics_listen is not None and server.metrics_listen in server.listen:
        problems.append(
            "server.metrics_listen: is also in server.listen (it must be an endpoint of its own)"
        )

    if (why := check_url(backend.url)) is not None:
        problems.append(f"backend.url: {why}")
    problems.extend(_choice_problem("backend.transport", backend.transport, Transport, quoted=True))
    path = backend.path or ("/sse" if backend.transport == "sse" else "/mcp")
    if not path.startswith("/") or "?" in path or "#" in path:
        problems.append(f'backend.path: "{backend.path}" must start with "/"')
    if backend.command is not None and not backend.command:
        problems.append("backend.command: must not be empty")
    for field in (
        "max_connections",
        "max_connections_per_grant",
        "max_sessions",
        "max_sessions_per_grant",
    ):
        if getattr(backend, field) < 1:
            problems.append(f"backend.{field}: must be at least 1")
    if backend.session_idle_timeout < 60:
        problems.append("backend.session_idle_timeout: must be at least 1m")
    backend = attrs.evolve(backend, path=path)

    issuer = auth.issuer or server.public_url
    if auth.issuer and (why := check_base_url(auth.issuer)) is not None:
        problems.append(f"auth_server.issuer: {why}")
    problems.extend(_duration_problems("auth_server", auth, _BOUNDS))
    problems.extend(_choice_problem("auth_server.consent", auth.consent, Consent))
    for i, scope in enumerate(auth.required_scopes):
        if scope not in auth.scopes_supported:
            problems.append(
                f'auth_server.required_scopes[{i}]: "{scope}" is not in scopes_supported'
            )
    if auth.registration.max_clients < 1:
        problems.append("auth_server.registration.max_clients: must be at least 1")
    problems.extend(_client_metadata_documents_problems(auth.client_metadata_documents))
    audiences = auth.allowed_audiences or (server.public_url.rstrip("/") + path,)
    auth = attrs.evolve(auth, issuer=issuer, allowed_audiences=audiences)
    problems.extend(_proxy_problems(config.proxy))
    if config.proxy.scope_rules and auth.consent == "skip":
        # Step-up scopes are granted to whoever asks (authorize admits them beyond the
        # registration): only the consent page makes a person approve them.
        problems.append(
            'proxy.scope_rules: need auth_server.consent "remember" or "always": with '
            '"skip" any client gets a step-up scope by asking for it'
        )
    auth = _with_rule_scopes(auth, config.proxy)

    upstream, upstream_problems = _validate_upstream(config)
    problems.extend(upstream_problems)

    problems.extend(
        _choice_problem(
            "upstream_token.header_strategy",
            config.upstream_token.header_strategy,
            HeaderStrategy,
        )
    )
    storage = config.storage
    for name in ("max_records", "max_pending", "max_logins", "max_refresh_tokens"):
        if getattr(storage, name) < 1:
            problems.append(f"storage.{name}: must be at least 1")
    if storage.max_refresh_tokens <= storage.max_logins:
        problems.append(
            "storage.max_refresh_tokens: must exceed max_logins (each login holds a current "
            "refresh token, and rotated ones are kept to detect reuse)"
        )
    problems.extend(_redis_problems(storage))
    if config.storage.type not in STORAGE_TYPES:
        known = ", ".join(f'"{name}"' for name in sorted(STORAGE_TYPES))
        problems.append(f'storage.type: "{config.storage.type}" is not supported (use {known})')
    problems.extend(_choice_problem("logging.format", config.logging.format, LogFormat))
    if config.logging.level not in get_args(LogLevel):
        problems.append(f'logging.level: "{config.logging.level}" is not a log level')

    resolved = attrs.evolve(config, backend=backend, auth_server=auth, upstream=upstream)
    return resolved, problems


# RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_MCP_METHOD = re.compile(r"[A-Za-z0-9_./-]+")
MAX_RESOURCE_NAME = 200


def _proxy_problems(proxy: ProxyConfig) -> list[str]:
    """One line per problem of ``[proxy]``: the resource name and each scope rule."""
    problems = []
    if len(proxy.resource_name) > MAX_RESOURCE_NAME or not proxy.resource_name.isprintable():
        problems.append(
            f"proxy.resource_name: must be printable text of at most {MAX_RESOURCE_NAME} characters"
        )
    for i, rule in enumerate(proxy.scope_rules):
        where = f"proxy.scope_rules[{i}]"
        if not _MCP_METHOD.fullmatch(rule.method):
            problems.append(
                f'{where}.method: "{rule.method}" is not an MCP method name (an exact name, '
                'e.g. "tools/call")'
            )
        if (why := glob_problem(rule.name)) is not None:
            problems.append(f'{where}.name: "{rule.name}" {why}')
        if not rule.scopes:
            problems.append(f"{where}.scopes: needs at least one scope")
        for j, scope in enumerate(rule.scopes):
            if not _SCOPE_TOKEN.fullmatch(scope):
                problems.append(f'{where}.scopes[{j}]: "{scope}" is not a scope (RFC 6749 §3.3)')
    return problems


def glob_problem(glob: str) -> str | None:
    """Why ``glob`` is not a usable name pattern (fnmatch: ``*``, ``?``, ``[...]``), or None."""
    if not glob:
        return 'is empty (use "*" for any name)'
    if not glob.isprintable():
        return "has control characters"
    if _unclosed_bracket(glob):
        return 'has an unclosed "[" (write "[[]" for a literal bracket)'
    return None


def _unclosed_bracket(glob: str) -> bool:
    """Whether a ``[`` of ``glob`` opens no set: fnmatch would quietly match it literally,
    which is almost surely a typo. (The same scan as fnmatch's: ``[!`` and a leading ``]``.)"""
    i = 0
    while (i := glob.find("[", i)) >= 0:
        j = i + 1
        j += glob.startswith("!", j)
        j += glob.startswith("]", j)
        if (i := glob.find("]", j)) < 0:
            return True
    return False


def _with_rule_scopes(auth: AuthServerConfig, proxy: ProxyConfig) -> AuthServerConfig:
    """``auth`` whose scopes_supported also lists every scope rule's scopes (clients must be
    able to ask for them)."""
    named = [s for rule in proxy.scope_rules for s in rule.scopes]
    supported = tuple(dict.fromkeys([*auth.scopes_supported, *named]))
    return attrs.evolve(auth, scopes_supported=supported)


_CIMD_BOUNDS = {"fetch_timeout": (0.5, 60.0), "cache_max_age": (0.0, 30 * 86400.0)}
_CIMD_SIZE_BOUNDS = (512, 1024 * 1024)
_HOST_PATTERN = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _client_metadata_documents_problems(cimd: ClientMetadataDocumentsConfig) -> list[str]:
    section = "auth_server.client_metadata_documents"
    problems = _duration_problems(section, cimd, _CIMD_BOUNDS)
    low, high = _CIMD_SIZE_BOUNDS
    if not low <= cimd.max_document_size <= high:
        problems.append(f"{section}.max_document_size: must be between 512B and 1MiB")
    for i, host in enumerate(cimd.allowed_hosts):
        if not _HOST_PATTERN.fullmatch(host):
            problems.append(
                f'{section}.allowed_hosts[{i}]: "{host}" is not a lowercase host name '
                '(or "*.example.com")'
            )
    return problems


def _redis_problems(storage: StorageConfig) -> list[str]:
    """One line per problem with the Redis keys (the password file is read at startup)."""
    from authproxy.storage.redis.url import RedisAddress, redacted, sentinel_address

    if storage.type != "redis":
        return [
            f'storage.{name}: only for type "redis"'
            for name in (
                "url",
                "password_file",
                "sentinels",
                "sentinel_master",
                "sentinel_password_file",
                "ca_file",
            )
            if getattr(storage, name)
        ]
    problems = []
    if not storage.url:
        problems.append('storage.url: required for type "redis"')
    else:
        try:
            address = RedisAddress.parse(storage.url)
        except ValueError as e:
            problems.append(f'storage.url: "{redacted(storage.url)}" {e}')
        else:
            if storage.ca_file and not address.tls:
                problems.append("storage.ca_file: only for a rediss:// url (TLS)")
            problems.extend(_sentinel_trust_problems(storage, address.tls))
    if not storage.key_prefix or any(c.isspace() for c in storage.key_prefix):
        problems.append("storage.key_prefix: must be non-empty, without spaces")
    for i, sentinel in enumerate(storage.sentinels):
        try:
            sentinel_address(sentinel)
        except ValueError as e:
            problems.append(f"storage.sentinels[{i}]: {e}")
    if bool(storage.sentinels) != bool(storage.sentinel_master):
        problems.append("storage.sentinel_master: needed with sentinels, and only with them")
    if storage.sentinels and storage.url.startswith("unix:"):
        problems.append("storage.sentinels: need a redis:// or rediss:// url, not unix://")
    return problems


def _sentinel_trust_problems(storage: StorageConfig, tls: bool) -> list[str]:
    """A sentinel decides where the Redis password goes: only TLS verified against
    ``ca_file`` keeps a rogue sentinel, or the address it names, from receiving it."""
    if not storage.sentinels:
        if storage.sentinel_password_file:
            return ["storage.sentinel_password_file: only with sentinels"]
        return []
    if storage.password_file and not tls:
        return [
            "storage.password_file: with sentinels, needs a rediss:// url (over plain TCP "
            "whoever answers as a sentinel can name itself and receive the password)"
        ]
    if tls and not storage.ca_file:
        return [
            "storage.ca_file: required with sentinels and a rediss:// url (the platform's "
            "trust store would accept a public certificate for any host a sentinel names)"
        ]
    return []


def _is_host_name(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return _HOST_PATTERN.fullmatch(value.lower()) is not None and not value.startswith("*")
    return True


#: The authorization request parameters authproxy sets itself; ``scope`` comes from
#: ``upstream.scopes``, so there is one place to configure it.
AUTHORIZE_PARAMS_RESERVED = frozenset(
    {
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "request",
        "request_uri",
        "response_mode",
    }
)
#: Claims and fields the user can set or an IdP lets be reassigned: naming the user by one
#: lets someone take another's identity (the "nOAuth" class). Compared lower-case, on a
#: dotted path's last part.
MUTABLE_IDENTITY_CLAIMS = frozenset(
    {"email", "preferred_username", "upn", "name", "nickname", "unique_name", "login", "username"}
)
MUTABLE_SUBJECT = "is a name or address the user can change, or the IdP can give to someone else; use a stable id (sub, oid, id)"


def _mutable(claim: str) -> bool:
    return claim.rpartition(".")[2].lower() in MUTABLE_IDENTITY_CLAIMS


def _validate_upstream(config: Config) -> tuple[UpstreamConfig, list[str]]:
    # Imported here: the upstream types' modules import this one.
    from authproxy.upstream.registry import UPSTREAM_TYPES

    upstream = config.upstream
    problems = UPSTREAM_TYPES.config_problems(config)
    problems.extend(
        _choice_problem(
            "upstream.token_endpoint_auth_method",
            upstream.token_endpoint_auth_method,
            TokenEndpointAuthMethod,
        )
    )
    if upstream.userinfo is not None:
        problems.extend(
            _choice_problem(
                "upstream.userinfo.http_method", upstream.userinfo.http_method, HttpMethod
            )
        )
    for name in upstream.authorize_params or {}:
        if name in AUTHORIZE_PARAMS_RESERVED:
            problems.append(
                f"upstream.authorize_params.{name}: is set by authproxy "
                + ("(use upstream.scopes)" if name == "scope" else "(the protocol's own)")
            )
    if upstream.subject_claim is not None and not upstream.subject_claim:
        problems.append("upstream.subject_claim: must name a claim")
    elif upstream.subject_claim and _mutable(upstream.subject_claim):
        problems.append(f'upstream.subject_claim: "{upstream.subject_claim}" {MUTABLE_SUBJECT}')
    for field in upstream.userinfo.subject_fields if upstream.userinfo else ():
        if _mutable(field):
            problems.append(f'upstream.userinfo.subject_fields: "{field}" {MUTABLE_SUBJECT}')
    if upstream.redirect_uri and (why := check_url(upstream.redirect_uri)) is not None:
        problems.append(f"upstream.redirect_uri: {why}")
    resolved = attrs.evolve(
        upstream,
        name=upstream.name or upstream.type,
        # where the callback is mounted: public_url's root, even for an issuer with a path
        redirect_uri=upstream.redirect_uri
        or config.server.public_url.rstrip("/") + "/oauth/callback",
    )
    return resolved, problems


def validate_config(data: Mapping[str, Any]) -> Config:
    """Structure and validate a parsed configuration, reading nothing else.

    Raises ConfigError with every problem. The result still lacks what ``startup_check``
    adds (the upstream client secret).
    """
    config, problems = _structure_and_validate(data)
    if problems:
        raise ConfigError(problems)
    return config


def _structure_and_validate(data: Mapping[str, Any]) -> tuple[Config, list[str]]:
    if not isinstance(data, Mapping):
        raise ConfigError(["(top level): must be a table of sections"])
    try:
        config = _converter.structure(dict(data), Config)
    except Exception as e:
        raise ConfigError(_structure_problems(e)) from None
    return _validate(config)


def startup_check(config: Config, environ: Mapping[str, str], reactor: Any = None) -> Config:
    """Check ``config`` against the machine it starts on; ``config`` with the client secret.

    Parses every listen endpoint (``reactor`` is only kept by the parsed endpoints), reads
    every signing key and HMAC secret file, and reads the upstream client secret from
    ``client_secret_file`` or the environment variable ``client_secret_env``. Raises
    ConfigError with every problem.
    """
    config, problems = _startup_problems(config, environ, reactor)
    if problems:
        raise ConfigError(problems)
    return config


def _startup_problems(
    config: Config, environ: Mapping[str, str], reactor: Any
) -> tuple[Config, list[str]]:
    problems = [
        f"server.listen[{i}]: {why}"
        for i, description in enumerate(config.server.listen)
        if (why := _check_listen(description, reactor)) is not None
    ]
    metrics_listen = config.server.metrics_listen
    if metrics_listen is not None and (why := _check_listen(metrics_listen, reactor)) is not None:
        problems.append(f"server.metrics_listen: {why}")
    problems.extend(_key_problems(config.auth_server))
    secret, secret_problems = _client_secret(config.upstream, environ)
    problems.extend(secret_problems)
    upstream = attrs.evolve(config.upstream, client_secret=secret)
    storage = config.storage
    if storage.password_file:
        password, password_problems = _read_secret_file(
            "storage.password_file", storage.password_file
        )
        problems.extend(password_problems)
        storage = attrs.evolve(storage, password=password)
    if storage.sentinel_password_file:
        sentinel_password, sentinel_problems = _read_secret_file(
            "storage.sentinel_password_file", storage.sentinel_password_file
        )
        problems.extend(sentinel_problems)
        storage = attrs.evolve(storage, sentinel_password=sentinel_password)
    if storage.ca_file:
        ca_pem, ca_problems = _read_ca_file("storage.ca_file", storage.ca_file)
        problems.extend(ca_problems)
        storage = attrs.evolve(storage, ca_pem=ca_pem)
    return attrs.evolve(config, upstream=upstream, storage=storage), problems


def _read_ca_file(field: str, path: str) -> tuple[bytes | None, list[str]]:
    """A PEM CA certificate from a file, or the one-line problem: unreadable or not PEM."""
    from twisted.internet.ssl import Certificate

    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        return None, [f'{field}: cannot read "{path}" ({e.strerror or e.__class__.__name__})']
    try:
        Certificate.loadPEM(pem)
    except Exception:
        return None, [f'{field}: "{path}" is not a PEM certificate']
    return pem, []


def _key_problems(auth_server: AuthServerConfig) -> list[str]:
    """Every unreadable or invalid signing key and HMAC secret file (the daemon loads them)."""
    from authproxy.keys.ring import KeySources

    return KeySources.from_config(auth_server).problems()


def _read_secret_file(field: str, path: str) -> tuple[Secret | None, list[str]]:
    """A secret from a file (stripped), or the one-line problem: unreadable or empty."""
    try:
        text = Path(path).read_text().strip()
    except OSError as e:
        return None, [f'{field}: cannot read "{path}" ({e.strerror or e.__class__.__name__})']
    if not text:
        return None, [f'{field}: "{path}" is empty']
    return Secret(text), []


def _client_secret(
    upstream: UpstreamConfig, environ: Mapping[str, str]
) -> tuple[Secret | None, list[str]]:
    """The client secret from its file, else from its environment variable; and any problem."""
    if upstream.client_secret_file:
        return _read_secret_file("upstream.client_secret_file", upstream.client_secret_file)
    if upstream.client_secret_env:
        value = environ.get(upstream.client_secret_env, "").strip()
        if not value:
            return None, [
                f"upstream.client_secret_env: the environment variable "
                f"{upstream.client_secret_env} is not set or empty"
            ]
        return Secret(value), []
    return None, []


def _check_listen(description: str, reactor: Any) -> str | None:
    from twisted.internet import endpoints

    from authproxy.ops.socket_activation import systemd_listen_problem

    if (problem := systemd_listen_problem(description)) is not None:
        return problem
    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # any parser failure is the operator's typo
        return f'"{description}" is not a Twisted server endpoint ({e})'
    return None


def config_from_mapping(
    data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
    root: str | None = None,
) -> Config:
    """Validate a parsed configuration and run the startup check; raises ConfigError with every problem.

    ``root`` stands for ``/`` when checking a configuration meant for another filesystem
    (``authproxy check --root``): see ``under_root``.
    """
    environ = os.environ if environ is None else environ
    if root is not None:
        data = under_root(data, root)
    try:
        config, problems = _structure_and_validate(data)
    except ConfigError as e:
        # The file does not structure as a whole; still read the files its sections name,
        # so that one run shows every problem.
        raise ConfigError(e.problems + _partial_startup_problems(data, environ, reactor)) from None
    config, startup = _startup_problems(config, environ, reactor)
    if problems or startup:
        raise ConfigError(problems + startup)
    return config


#: The keys naming files that the daemon reads, by section: what ``under_root`` moves.
_FILE_KEYS = {
    "auth_server": (
        "signing_keys_dir",
        "hmac_secrets_dir",
        "signing_key_files",
        "hmac_secret_files",
    ),
    "upstream": ("client_secret_file",),
    "storage": ("password_file", "sentinel_password_file", "ca_file"),
}


def under_root(data: Mapping[str, Any], root: str) -> Mapping[str, Any]:
    """``data`` with the absolute paths of the files it names moved under ``root``.

    For checking a configuration against the tree it will run on (a staging directory, an
    image's root filesystem, CI's prepared files) without editing it: ``/etc/authproxy/keys``
    is looked up as ``ROOT/etc/authproxy/keys``. Relative paths, and the key files of
    ``ssl:`` listen endpoints, are left as written.
    """
    if not isinstance(data, Mapping):
        return data
    result = dict(data)
    for section, keys in _FILE_KEYS.items():
        table = data.get(section)
        if not isinstance(table, Mapping):
            continue
        moved = dict(table)
        for key in keys:
            value = table.get(key)
            if isinstance(value, str):
                moved[key] = _rooted(value, root)
            elif isinstance(value, list):
                moved[key] = [_rooted(v, root) if isinstance(v, str) else v for v in value]
        result[section] = moved
    return result


def _rooted(path: str, root: str) -> str:
    return os.path.join(root, path.lstrip("/")) if path.startswith("/") else path


def _partial_startup_problems(data: object, environ: Mapping[str, str], reactor: Any) -> list[str]:
    """The startup check of the sections that structure on their own (the others are
    reported already): what a file that does not structure as a whole still gets checked."""
    if not isinstance(data, Mapping):
        return []

    def section(name: str, kind: type[Any]) -> Any:
        table = data.get(name, {})
        try:
            return _converter.structure(dict(table), kind)
        except Exception:  # its problems are among the structure problems
            return kind()

    listen = (
        data.get("server", {}).get("listen") if isinstance(data.get("server"), Mapping) else None
    )
    try:
        listen = _string_list(listen, tuple)
    except ValueError:
        listen = ()
    partial = Config(
        server=ServerConfig(public_url="", listen=listen),
        backend=BackendConfig(url=""),
        upstream=section("upstream", UpstreamConfig),
        auth_server=section("auth_server", AuthServerConfig),
        storage=section("storage", StorageConfig),
    )
    return _startup_problems(partial, environ, reactor)[1]


def load_config(
    path: str | os.PathLike[str],
    environ: Mapping[str, str] | None = None,
    reactor: Any = None,
    root: str | None = None,
) -> Config:
    """Read a TOML (or, for ``.json`` files, JSON) configuration file (``root``: see ``under_root``)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from None
    try:
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            [f"{path}: not valid {path.suffix.lstrip('.') or 'toml'} ({e})"]
        ) from None
    return config_from_mapping(data, environ=environ, reactor=reactor, root=root)
