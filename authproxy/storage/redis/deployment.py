"""redis_storage_for: the Redis storage a ``[storage]`` section describes, with its services.

The daemon's way in (``[storage].type = "redis"``): the connection (:class:`RedisLink`) and
the revocation feed are services of the storage, started and stopped with the application;
nothing here waits for Redis, so a daemon whose Redis is down still starts (``/ready``
names storage until it connects).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from authproxy.storage.capacity import StorageCaps
from authproxy.storage.composite import Storage
from authproxy.storage.redis import redis_storage
from authproxy.storage.redis.feed import RevocationFeed
from authproxy.storage.redis.link import RedisLink
from authproxy.storage.redis.revocations import RedisRevocations
from authproxy.storage.redis.sealing import HMACSecretRing
from authproxy.storage.redis.sentinel import SentinelMasterEndpoint
from authproxy.storage.redis.url import (
    RedisAddress,
    client_endpoint,
    describe,
    sentinel_address,
)

if TYPE_CHECKING:
    from authproxy.config import StorageConfig


def redis_storage_for(
    config: StorageConfig, caps: StorageCaps, reactor: Any, ring: HMACSecretRing
) -> Storage:
    """The Redis storage of a validated ``[storage]`` section (password and CA already read),
    sealing upstream tokens with ``ring`` (the live KeyRing: reloads rotate the sealing key).
    """
    address = RedisAddress.parse(config.url)
    password = config.password.reveal() if config.password is not None else None
    endpoint, where = _endpoint(config, address, reactor, password)
    link = RedisLink(endpoint, reactor, dbid=address.db, password=password, describe=where)
    storage = redis_storage(
        link.commands, reactor, ring, key_prefix=config.key_prefix, **attrs.asdict(caps)
    )
    assert isinstance(storage.revocations, RedisRevocations)
    feed = RevocationFeed(endpoint, storage.revocations, reactor, password=password)
    return attrs.evolve(storage, services=(link, feed), readiness=link.readiness)


def _endpoint(
    config: StorageConfig, address: RedisAddress, reactor: Any, password: str | None
) -> tuple[Any, str]:
    """The client endpoint and where it leads (for logs and /ready). With sentinels the url
    gives only the scheme (TLS or not) and the database: its host and port are not used."""
    if not config.sentinels:
        return client_endpoint(address, reactor, config.ca_pem), describe(address)
    sentinels = [sentinel_address(text) for text in config.sentinels]
    endpoint = SentinelMasterEndpoint(
        reactor,
        sentinels,
        config.sentinel_master,
        tls=address.tls,
        ca_pem=config.ca_pem,
        password=password,
        sentinel_password=(
            config.sentinel_password.reveal() if config.sentinel_password is not None else None
        ),
    )
    via = ",".join(config.sentinels)
    return endpoint, f"{address.scheme} master {config.sentinel_master} via {via} db {address.db}"
