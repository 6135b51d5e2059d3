"""RevocationFeed: other replicas' revocations reach this replica's guard within a second.

The guard reads ``revocations.generation`` on every request without any Redis I/O; this
service moves it. A dedicated pub/sub connection subscribes to ``<key_prefix>revocations``
(every deny-listing script publishes there) and bumps the generation on each message. A
subscription lost and re-established may have missed messages, so every (re)subscription
bumps it too; and a poll of the shared generation counter every ``poll_interval`` seconds
is the safety net for a subscription that silently stopped delivering.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from authproxy.storage.redis.protocol import InlineReplies
from authproxy.storage.redis.revocations import RedisRevocations


def _subscriber_protocol() -> type:
    from txredisapi import SubscriberProtocol

    class RevocationSubscriber(InlineReplies, SubscriberProtocol):  # type: ignore[misc]
        """Subscribes once connected (and authenticated); hands messages to the feed. A
        message's reply is parsed at once and the connection has no Nagle delay (as the
        storage's), so a revocation reaches the guard without waiting on either."""

        def connectionMade(self) -> Deferred[Any]:
            feed: _Subscription = self.factory.feed
            d: Deferred[Any] = super().connectionMade()
            d.addCallback(lambda _: self.subscribe(feed.channel))
            d.addCallback(lambda _: feed.subscribed())
            return d

        def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
            self.factory.feed.revoked()

    return RevocationSubscriber


class _Subscription(Service):
    """The pub/sub connection, reconnecting with backoff while the service runs."""

    log = Logger()

    def __init__(self, endpoint: Any, revocations: RedisRevocations, password: str | None):
        self.endpoint = endpoint
        self.revocations = revocations
        self.channel = revocations.channel
        self.password = password
        self.subscriptions = 0  # how many times the subscription was (re)established
        self._factory: Any = None

    def startService(self) -> None:
        from txredisapi import ConnectionHandler, RedisFactory

        super().startService()
        factory = RedisFactory(
            repr(self.endpoint),
            None,
            1,
            isLazy=True,
            handler=ConnectionHandler,
            password=self.password,
            convertNumbers=False,
        )
        factory.protocol = _subscriber_protocol()
        factory.feed = self
        factory.reconnect = True
        factory.maxDelay = 5  # back within seconds once Redis is back
        factory.startConnecting(self.endpoint)
        self._factory = factory

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        factory, self._factory = self._factory, None
        if factory is None:
            return succeed(None)
        return factory.disconnect()

    def subscribed(self) -> None:
        self.subscriptions += 1
        if self.subscriptions > 1:
            self.log.info("Revocation feed subscribed again: every cached token re-checks")
        self.revocations.bump()  # messages may have been missed while unsubscribed

    def revoked(self) -> None:
        self.revocations.bump()


class RevocationFeed(MultiService):
    """The subscription plus the periodic poll, as one service of the storage."""

    log = Logger()

    def __init__(
        self,
        endpoint: Any,
        revocations: RedisRevocations,
        clock: Any,
        *,
        password: str | None = None,
        poll_interval: float = 10.0,
    ) -> None:
        super().__init__()
        self.revocations = revocations
        self.subscription = _Subscription(endpoint, revocations, password)
        self.subscription.setServiceParent(self)
        poll = TimerService(poll_interval, self._poll)
        poll.clock = clock
        poll.setServiceParent(self)

    def _poll(self) -> Deferred[Any]:
        d = self.revocations.poll_generation()
        d.addErrback(lambda f: self.log.warn("Revocation poll failed: {why}", why=f.value))
        return d
