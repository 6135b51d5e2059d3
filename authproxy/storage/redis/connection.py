"""RedisCollection: what every Redis-backed concern shares (keys, clock, records, scripts).

Time: a record's expiry is stored inside it (``expires_at``, by the injected clock) and a
record past it by that clock is absent, whatever Redis says; the Redis TTL is set from the
same clock as the time left (``PX``, never an absolute ``PEXPIREAT``), so Redis removes the
record soon after it expired. With the reactor clock in production both agree; with a fake
clock in tests the record reads as gone at once and Redis cleans it up later. Replicas'
clocks must agree to within the leeway the guard already allows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import cattrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")

#: Records as JSON: attrs classes to plain dicts and back (tuples come back as tuples).
records = cattrs.Converter()
# values typed `object` (metadata, claims) are JSON already: taken as they are
records.register_structure_hook_func(lambda cls: cls is object, lambda value, _: value)


def dumps(record: Any) -> str:
    return json.dumps(records.unstructure(record), separators=(",", ":"))


def loads(text: str | bytes, cls: type[T]) -> T:
    return records.structure(json.loads(text), cls)


def ttl_ms(expires_at: float, now: float) -> int:
    """The Redis TTL for a record expiring at ``expires_at`` (0: never expires)."""
    if math.isinf(expires_at):
        return 0
    return max(1, math.ceil((expires_at - now) * 1000))


class LuaScript:
    """A Lua script: the one atomic step an OAuth operation needs, named after it.

    Sent as EVALSHA of the hash computed once here, and as EVAL when Redis does not know it
    (the first time, after a restart or ``SCRIPT FLUSH``). txredisapi's own ``eval`` would
    hash the whole source (the shared prelude makes it kilobytes) on every call.
    """

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 (Redis's script id)

    def __call__(self, redis: Any, keys: Sequence[str], args: Sequence[Any]) -> Deferred[Any]:
        keys, args = list(keys), [str(a) for a in args]
        d: Deferred[Any] = redis.evalsha(self.sha, keys, args)

        def unknown(failure: Failure) -> Any:
            from txredisapi import ScriptDoesNotExist

            failure.trap(ScriptDoesNotExist)
            return redis.eval(self.source, keys, args)

        return d.addErrback(unknown)


class RedisCollection:
    """A concern's view of one Redis database: its key prefix, the clock, the connection."""

    def __init__(self, redis: Any, key_prefix: str, clock: IReactorTime) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.now: Callable[[], float] = cast(Any, clock).seconds

    def key(self, *parts: str) -> str:
        """``key_prefix`` + the parts joined by ``:`` (several deployments share a Redis)."""
        return self.key_prefix + ":".join(parts)
