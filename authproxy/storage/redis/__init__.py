"""Redis storage: every concern in one shared Redis, so replicas and restarts lose nothing.

One module per concern over :class:`~authproxy.storage.redis.owned.OwnedCollection` (a
capped, owner-fair collection) and :class:`~authproxy.storage.redis.connection.LuaScript`
(the atomic steps: ``redeem_code``, ``mark_rotated``, ``revoke_family``, ``take``...).
Records are JSON with their expiry inside; see ``connection`` for how the Redis TTL relates
to the injected clock. Keys of one record's script are built inside the script from
prefixes, so this needs one Redis (with Sentinel for HA), not Redis Cluster.

Other replicas' revocations arrive through :class:`~authproxy.storage.redis.feed.RevocationFeed`
(pub/sub, a bump on every resubscription, a periodic poll).

The daemon builds it for ``[storage].type = "redis"`` (``deployment.redis_storage_for``):
the connection (:class:`~authproxy.storage.redis.link.RedisLink`) and the feed are
application services; startup never waits for Redis.

Sentinel (``[storage].sentinels`` with ``sentinel_master``; see ``sentinel``): before every
(re)connection, of the link and of the feed alike, the sentinels are asked in order for the
master's address (2 s each; one down or not knowing the master is skipped), and the node
must answer ``ROLE`` with ``master`` before the connection is used. ``url`` then gives only
the scheme (``rediss://``: TLS, the certificate verified for the address the sentinel names)
and the database; its host and port are not contacted, so write the master's name there
(``redis://mymaster/0``). With ``rediss://`` sentinels are asked over TLS too, and
``ca_file`` (required then) verifies sentinels and data nodes alike; ``sentinel_password``
authenticates to the sentinels (the trust model: ``sentinel``'s docstring). A failover: Sentinel kills the old master's
connections when it demotes it (and a write answering ``READONLY`` drops the link's), the
reconnect rediscovers, and service continues on the new master with what had replicated.
Writes the old master accepted after the promotion and before its demotion are lost, as for
any Redis client, an authorization code's ``redeemed`` flag included (so a code could be
redeemed twice); ``min-replicas-to-write`` on the servers narrows that window.

Redis down (see ``link``): every endpoint that needs storage answers 503 with
``Retry-After`` at once (or after the 3 s reply timeout for a hung Redis), ``/ready`` names
storage, and proxied requests whose access token the guard already verified keep flowing
(the guard reads only the in-memory revocation generation; the upstream token comes from
the provider's in-memory cache while fresh). A revocation while Redis is unreachable: the
revoke request itself answers 503, so the client retries and nothing is half-revoked.
Revocations other replicas make while this one is cut off reach it when it reconnects: the
feed's resubscription bumps the generation, so every cached token is checked against the
deny list again (the periodic poll is the safety net). Until then this replica serves the
tokens it had verified, at most for their remaining lifetime.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from authproxy.storage.capacity import StorageCaps
from authproxy.storage.composite import Storage
from authproxy.storage.redis.clients import RedisClients
from authproxy.storage.redis.codes import RedisAuthorizationCodes
from authproxy.storage.redis.families import RedisTokenFamilies
from authproxy.storage.redis.logins import RedisLogins
from authproxy.storage.redis.owned import OwnedCollection
from authproxy.storage.redis.rates import RedisRateCounters
from authproxy.storage.redis.revocations import RedisRevocations
from authproxy.storage.redis.sealing import AtRestSealer, HMACSecretRing
from authproxy.storage.redis.sessions import RedisUpstreamSessions
from authproxy.storage.redis.upkeep import RedisUpkeep
from authproxy.storage.redis.users import RedisUsers

__all__ = ["redis_storage"]


def redis_storage(
    redis: Any,
    clock: IReactorTime,
    ring: HMACSecretRing,
    *,
    key_prefix: str = "authproxy:",
    **caps: Any,
) -> Storage:
    """A Storage in the Redis that ``redis`` (a txredisapi connection) talks to; upstream
    tokens are sealed with keys derived from ``ring``'s HMAC secrets.

    ``caps`` are the keywords of :class:`~authproxy.storage.capacity.StorageCaps`, as for
    ``memory_storage``. ``max_users`` and ``max_rate_keys`` bound nothing here: user ids and
    rate buckets expire in Redis by themselves (see their modules).
    """
    limits = StorageCaps(**caps)
    refusals: dict[str, int] = {}

    def collection(name: str, cap: int, **kwargs: Any) -> OwnedCollection:
        return OwnedCollection(redis, key_prefix, clock, name, cap, refusals, **kwargs)

    clients = collection("clients", limits.max_clients)
    pending = collection("pending", limits.max_pending)
    codes = collection("codes", limits.max_codes)
    refresh_tokens = collection("refresh_tokens", limits.max_refresh_tokens)
    families = collection("families", limits.max_families, policy="own", child=refresh_tokens)
    sessions = collection("upstream_sessions", limits.max_upstream_sessions)
    revocations = RedisRevocations(
        redis, key_prefix, clock, limits.max_revoked_jtis, limits.revoked_jti_leeway
    )
    return Storage(
        clock=clock,
        clients=RedisClients(clients, limits.unused_client_ttl),
        logins=RedisLogins(pending),
        codes=RedisAuthorizationCodes(codes),
        families=RedisTokenFamilies(families, refresh_tokens, revocations),
        upstream_sessions=RedisUpstreamSessions(sessions, AtRestSealer(ring)),
        revocations=revocations,
        rate_counters=RedisRateCounters(redis, key_prefix, clock),
        users=RedisUsers(redis, key_prefix, clock),
        upkeep=RedisUpkeep([clients, pending, codes, families, refresh_tokens, sessions], refusals),
    )
