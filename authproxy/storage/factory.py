"""build_storage: the Storage named by ``[storage].type``, from a registry of storage types."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from authproxy.storage.composite import Storage
from authproxy.storage.memory import memory_storage

if TYPE_CHECKING:  # config validation reads STORAGE_TYPES: no import back at run time
    from authproxy.config import Config

StorageType = Callable[["Config", Any], Storage]


def storage_caps(config: Config) -> dict[str, int]:
    """The cap of each storage collection (benchmarks/memory_caps.py sizes them)."""
    storage = config.storage
    return {
        "clients": config.auth_server.registration.max_clients,
        "pending": storage.max_pending,
        "codes": storage.max_pending,
        "refresh_tokens": storage.max_refresh_tokens,
        "families": storage.max_logins,
        "upstream_sessions": storage.max_logins,
        "users": storage.max_records,
        "revoked_jtis": storage.max_records,
    }


def _memory(config: Config, clock: Any) -> Storage:
    limits = {f"max_{name}": value for name, value in storage_caps(config).items()}
    return memory_storage(
        clock, unused_client_ttl=config.auth_server.registration.unused_client_ttl, **limits
    )


# [storage].type -> how to build it; config validation reads the names from here.
STORAGE_TYPES: dict[str, StorageType] = {"memory": _memory}


def build_storage(config: Config, clock: Any) -> Storage:
    """The storage ``config.storage.type`` names, on ``clock``."""
    return STORAGE_TYPES[config.storage.type](config, clock)
