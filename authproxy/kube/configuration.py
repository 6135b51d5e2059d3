"""An EmbeddedAuthServer's spec as authproxy's configuration (the ConfigMap's authproxy.toml).

The configuration names directories and files where the pod mounts them (``MOUNTS``), never
the Secrets' keys: adding a key to a list changes the pod's projected items only, and the
TOML (so the ConfigMap) stays the same. The mapping is checked by authproxy's own loader
(``validate_config``), so a resource the daemon would refuse is refused at render time, with
the daemon's words.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from authproxy.config import ConfigError, validate_config
from authproxy.kube.resource import ResourceError, secret_ref, secret_refs

#: Where the pod mounts what the configuration names.
CONFIG_DIR = "/etc/authproxy/config"
CONFIG_FILE = "authproxy.toml"
KEYS_DIR = "/etc/authproxy/keys"
HMAC_DIR = "/etc/authproxy/hmac"
UPSTREAM_DIR = "/etc/authproxy/upstream"
REDIS_DIR = "/etc/authproxy/redis"
CLIENT_SECRET_FILE = "client-secret"
REDIS_PASSWORD_FILE = "password"
#: The container port authproxy listens on in the pod.
PORT = 8080
#: server.shutdown_grace, written out: the pod's terminationGracePeriodSeconds is built on it.
SHUTDOWN_GRACE_SECONDS = 25

_LIFESPANS = {
    "accessTokenLifespan": "access_token_lifespan",
    "refreshTokenLifespan": "refresh_token_lifespan",
    "authCodeLifespan": "auth_code_lifespan",
}
_USERINFO = {
    "endpointUrl": "endpoint_url",
    "httpMethod": "http_method",
    "additionalHeaders": "additional_headers",
}
_FIELD_MAPPING = {
    "subjectFields": "subject_fields",
    "nameFields": "name_fields",
    "emailFields": "email_fields",
}
_UPSTREAM = {
    "issuerUrl": "issuer_url",
    "clientId": "client_id",
    "redirectUri": "redirect_uri",
    "scopes": "scopes",
    "authorizationEndpoint": "authorization_endpoint",
    "tokenEndpoint": "token_endpoint",
    "revocationEndpoint": "revocation_endpoint",
}


def authproxy_config(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The configuration mapping for ``spec``; ResourceError with every problem.

    The problems of the resource's shape come first; then, if it has the right shape,
    authproxy's own validation of the result.
    """
    problems: list[str] = []
    secret_refs(spec, "signingKeySecretRefs", problems)
    secret_refs(spec, "hmacSecretRefs", problems)
    issuer = spec.get("issuer")
    if not isinstance(issuer, str):
        problems.append("spec.issuer: is required")
    config: dict[str, dict[str, Any]] = {
        "server": {
            "listen": [f"tcp:{PORT}"],
            "public_url": issuer,
            "shutdown_grace": f"{SHUTDOWN_GRACE_SECONDS}s",
        },
        "backend": _renamed(spec.get("backend"), {"url": "url", "transport": "transport"}),
        "auth_server": {
            "signing_keys_dir": KEYS_DIR,
            "hmac_secrets_dir": HMAC_DIR,
            **_renamed(spec.get("tokenLifespans"), _LIFESPANS),
        },
        "upstream": _upstream(spec, problems),
    }
    if not config["backend"].get("url"):
        problems.append("spec.backend.url: is required")
    storage = _storage(spec.get("storage"), problems)
    if storage:
        config["storage"] = storage
    config["logging"] = {"format": "json"}
    if problems:
        raise ResourceError(problems)
    try:
        validate_config(config)
    except ConfigError as e:
        raise ResourceError([f"authproxy configuration: {p}" for p in e.problems]) from None
    return config


def _renamed(table: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """The keys of ``table`` that ``names`` knows, under authproxy's names."""
    if not isinstance(table, Mapping):
        return {}
    return {names[key]: value for key, value in table.items() if key in names}


def _upstream(spec: Mapping[str, Any], problems: list[str]) -> dict[str, Any]:
    providers = spec.get("upstreamProviders")
    if not isinstance(providers, list) or len(providers) != 1:
        problems.append("spec.upstreamProviders: must have exactly one entry")
        return {}
    provider = providers[0]
    kind = provider.get("type") if isinstance(provider, Mapping) else None
    field = {"oidc": "oidcConfig", "oauth2": "oauth2Config"}.get(str(kind))
    details = provider.get(field) if field else None
    if field is None or not isinstance(details, Mapping):
        problems.append(
            "spec.upstreamProviders[0]: type must be oidc (with oidcConfig) "
            "or oauth2 (with oauth2Config)"
        )
        return {}
    upstream: dict[str, Any] = {"type": kind, "name": provider.get("name") or kind}
    upstream.update(_renamed(details, _UPSTREAM))
    if "clientSecretRef" in details:
        path = f"spec.upstreamProviders[0].{field}.clientSecretRef"
        secret_ref(details["clientSecretRef"], path, problems)
        upstream["client_secret_file"] = f"{UPSTREAM_DIR}/{CLIENT_SECRET_FILE}"
    userinfo = details.get("userInfo")
    if isinstance(userinfo, Mapping):
        upstream["userinfo"] = {
            **_renamed(userinfo, _USERINFO),
            **_renamed(userinfo.get("fieldMapping"), _FIELD_MAPPING),
        }
    return upstream


def _storage(storage: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(storage, Mapping) or storage.get("type", "memory") == "memory":
        return {}
    redis = storage.get("redis")
    if storage.get("type") != "redis" or not isinstance(redis, Mapping):
        problems.append('spec.storage: type must be memory, or redis with "redis" set')
        return {}
    path = "spec.storage.redis.aclUserConfig.passwordSecretRef"
    acl = redis.get("aclUserConfig")
    secret_ref(acl.get("passwordSecretRef") if isinstance(acl, Mapping) else None, path, problems)
    table = {
        "type": "redis",
        "url": f"redis://{redis.get('addr')}/{redis.get('db', 0)}",
        "password_file": f"{REDIS_DIR}/{REDIS_PASSWORD_FILE}",
    }
    if "keyPrefix" in redis:
        table["key_prefix"] = redis["keyPrefix"]
    return table


def to_toml(config: Mapping[str, Mapping[str, Any]]) -> str:
    """``config`` as TOML: tables of strings, integers, booleans, lists of strings and
    sub-tables (all a rendered configuration holds). The text is read back with tomllib and
    must give ``config`` again: a ConfigMap the daemon cannot load is never rendered
    (ValueError naming the value)."""
    lines: list[str] = []

    def table(name: str, values: Mapping[str, Any]) -> None:
        lines.append(f"[{name}]")
        nested = {k: v for k, v in values.items() if isinstance(v, Mapping)}
        lines.extend(
            f"{_key(key, name)} = {_value(value, f'{name}.{key}')}"
            for key, value in values.items()
            if key not in nested
        )
        for key, value in nested.items():
            table(f"{name}.{_key(key, name)}", value)

    for name, values in config.items():
        table(name, values)
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != config:
        raise ValueError("the configuration does not survive TOML encoding")
    return text


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value, where)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item, f"{where}[]") for item in value) + "]"
    raise ValueError(f"{where}: {type(value).__name__} has no TOML form here")


def toml_string(text: str, where: str = "value") -> str:
    """``text`` as a TOML basic string: ``"`` and ``\\`` escaped, control characters as
    ``\\uXXXX``, everything else as itself (UTF-8; a JSON string would write characters
    beyond U+FFFF as surrogate pairs, which TOML refuses). A lone surrogate has no TOML
    form: ValueError naming ``where``."""
    out = []
    for char in text:
        point = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif point < 0x20 or point == 0x7F:
            out.append(f"\\u{point:04x}")
        elif 0xD800 <= point <= 0xDFFF:
            raise ValueError(f"{where}: a lone surrogate (U+{point:04X}) is not text")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _key(name: str, where: str = "") -> str:
    """A TOML key: bare when it can be (``client_id``), else quoted (``"X-Tenant.Id"``)."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_string(name, f"{where} key")
