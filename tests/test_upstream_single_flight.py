"""SingleFlight: one fetch per key in flight, its result (or failure) shared by every waiter."""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred
from twisted.trial.unittest import SynchronousTestCase

from authproxy.upstream.single_flight import SingleFlight


class SingleFlightTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.flights: SingleFlight[str] = SingleFlight()
        self.started: list[Deferred[str]] = []

    async def fetch(self) -> str:
        d: Deferred[str] = Deferred()
        self.started.append(d)
        return await d

    def test_concurrent_callers_share_one_fetch(self) -> None:
        first, second = self.flights.run(self.fetch), self.flights.run(self.fetch)
        self.assertIsNot(first, second)  # each caller waits on a Deferred of its own
        self.assertEqual(len(self.started), 1)
        self.assertNoResult(first)
        self.started[0].callback("keys")
        self.assertEqual(self.successResultOf(first), "keys")
        self.assertEqual(self.successResultOf(second), "keys")

    def test_failure_reaches_every_waiter_and_the_next_call_fetches_again(self) -> None:
        first, second = self.flights.run(self.fetch), self.flights.run(self.fetch)
        self.started[0].errback(ValueError("IdP down"))
        self.failureResultOf(first, ValueError)
        self.failureResultOf(second, ValueError)
        third = self.flights.run(self.fetch)
        self.assertEqual(len(self.started), 2)
        self.started[1].callback("keys")
        self.assertEqual(self.successResultOf(third), "keys")

    def test_success_is_not_cached(self) -> None:
        self.flights.run(self.fetch)
        self.started[0].callback("old")
        later = self.flights.run(self.fetch)
        self.assertEqual(len(self.started), 2)
        self.started[1].callback("new")
        self.assertEqual(self.successResultOf(later), "new")

    def test_keys_fly_separately(self) -> None:
        alice, bob = self.flights.run(self.fetch, "alice"), self.flights.run(self.fetch, "bob")
        self.assertEqual(len(self.started), 2)
        self.started[1].callback("bob's")
        self.assertNoResult(alice)
        self.assertEqual(self.successResultOf(bob), "bob's")

    def test_one_caller_cancelling_leaves_the_fetch_and_the_others(self) -> None:
        leaving, staying = self.flights.run(self.fetch), self.flights.run(self.fetch)
        leaving.cancel()
        self.failureResultOf(leaving, CancelledError)
        self.assertNoResult(self.started[0])  # the fetch itself goes on
        joining = self.flights.run(self.fetch)
        self.assertEqual(len(self.started), 1)
        self.started[0].callback("keys")
        self.assertEqual(self.successResultOf(staying), "keys")
        self.assertEqual(self.successResultOf(joining), "keys")

    def test_fetch_that_finishes_at_once(self) -> None:
        async def at_once() -> str:
            return "keys"

        self.assertEqual(self.successResultOf(self.flights.run(at_once)), "keys")
        self.assertEqual(self.successResultOf(self.flights.run(at_once)), "keys")
