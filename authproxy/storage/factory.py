"""build_storage: the Storage named by ``[storage].type``, from a registry of storage types."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from authproxy.storage.capacity import StorageCaps
from authproxy.storage.composite import Storage
from authproxy.storage.memory import memory_storage

if TYPE_CHECKING:  # config validation reads STORAGE_TYPES: no import back at run time
    from authproxy.config import Config

# (config, clock, key ring) -> Storage; the ring's HMAC secrets seal what a store must
# not hold in the clear (upstream tokens in Redis), following key reloads.
StorageType = Callable[["Config", Any, Any], Storage]


def config_caps(config: Config) -> StorageCaps:
    """The caps ``config`` gives every storage type."""
    storage = config.storage
    registration = config.auth_server.registration
    # each of these settings sizes two collections (see the [storage] settings in config.py)
    pending, logins, records = storage.max_pending, storage.max_logins, storage.max_records
    return StorageCaps(
        max_clients=registration.max_clients,
        unused_client_ttl=registration.unused_client_ttl,
        max_pending=pending,
        max_codes=pending,
        max_refresh_tokens=storage.max_refresh_tokens,
        max_families=logins,
        max_upstream_sessions=logins,
        max_users=records,
        max_revoked_jtis=records,
    )


def storage_caps(config: Config) -> dict[str, int]:
    """The cap of each storage collection (benchmarks/memory_caps.py sizes them)."""
    return config_caps(config).collection_caps()


def _memory(config: Config, clock: Any, ring: Any) -> Storage:
    return memory_storage(clock, **attrs.asdict(config_caps(config)))


def _redis(config: Config, reactor: Any, ring: Any) -> Storage:
    from authproxy.storage.redis.deployment import redis_storage_for

    return redis_storage_for(config.storage, config_caps(config), reactor, ring)


# [storage].type -> how to build it; config validation reads the names from here.
STORAGE_TYPES: dict[str, StorageType] = {"memory": _memory, "redis": _redis}


def build_storage(config: Config, clock: Any, ring: Any = None) -> Storage:
    """The storage ``config.storage.type`` names, on ``clock`` (the reactor, for a
    networked store); ``ring`` is the KeyRing (needed by Redis, see StorageType)."""
    return STORAGE_TYPES[config.storage.type](config, clock, ring)
