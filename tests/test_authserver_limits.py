"""Issue 15 items 3-5: revocations are never forgotten, floods cost their own source, and
every per-address limit counts an IPv6 source by its /64."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import ConfigError, config_from_mapping
from authproxy.http.responses import source_key
from authproxy.ops.metrics import AuthproxyMetrics
from authproxy.storage.memory import memory_storage
from authproxy.testing.upstream import AuthServerHarness, HTTPResult, s256_pair
from tests.test_authserver_token import claims_of

UNLIMITED = {"token_rate": "1000000/min", "token_source_rate": "1000000/min"}
BEHIND_PROXY = {"server": {"trusted_proxies": ["127.0.0.1/32"]}}


def revoke(h: AuthServerHarness, client: dict[str, Any], token: str, **kw: Any) -> HTTPResult:
    return h.post_form("/oauth/revoke", {"token": token, "client_id": client["client_id"]}, **kw)


class RevocationNeverForgottenTests(SynchronousTestCase):
    def test_refresh_and_revoke_cycles_never_undo_a_revocation(self) -> None:
        """The audit's attack: 70 refresh-and-revoke cycles by another signed-in client used
        to push a victim's revocation out of a small deny list; now the deny list refuses
        new issuance (503) instead of forgetting."""
        h = AuthServerHarness({"auth_server": UNLIMITED}, storage_limits={"max_revoked_jtis": 64})
        alice = h.register()
        alice_tokens = h.tokens(alice)
        self.assertEqual(revoke(h, alice, alice_tokens["access_token"]).code, 200)
        alice_jti = claims_of(h, alice_tokens["access_token"])["jti"]

        mallory = h.register()
        refresh_token = h.tokens(mallory)["refresh_token"]
        refusals: list[HTTPResult] = []
        for _ in range(70):
            h.clock.advance(1)
            result = h.refresh(mallory, refresh_token)
            if result.code != 200:
                refusals.append(result)
                continue
            refresh_token = result.json()["refresh_token"]
            self.assertEqual(revoke(h, mallory, result.json()["access_token"]).code, 200)
            self.assertTrue(self.successResultOf(h.storage.revocations.is_jti_revoked(alice_jti)))

        self.assertTrue(self.successResultOf(h.storage.revocations.is_jti_revoked(alice_jti)))
        self.assertTrue(refusals, "a full deny list must refuse issuance")
        refused = refusals[0]
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.json()["error"], "temporarily_unavailable")
        self.assertGreater(int(refused.header("retry-after") or 0), 0)
        self.assertGreater(h.storage.upkeep.refusals()["revoked_jtis"], 0)
        # mallory's unrotated refresh token still works once the revocations have expired
        h.clock.advance(h.config.auth_server.access_token_lifespan + 61)
        self.assertEqual(h.refresh(mallory, refresh_token).code, 200)

    def test_refused_code_stays_redeemable(self) -> None:
        h = AuthServerHarness({"auth_server": UNLIMITED}, storage_limits={"max_revoked_jtis": 1})
        client = h.register()
        # the deny list is full for 100 s (exp plus the 60 s leeway)
        self.successResultOf(
            h.storage.revocations.revoke_jti("someone-elses", h.clock.seconds() + 40)
        )
        verifier, challenge = s256_pair()
        code = h.login(client, challenge)["code"]
        refused = h.redeem(client, code, verifier)
        self.assertEqual(refused.code, 503)
        self.assertEqual(refused.header("retry-after"), "100")
        h.clock.advance(100)  # the code (5 min) is still unredeemed and valid
        self.assertEqual(h.redeem(client, code, verifier).code, 200)

    def test_refresh_token_family_of_another_client_survives_a_login_flood(self) -> None:
        """Logins flooding the families cap never end another client's login."""
        h = AuthServerHarness({"auth_server": UNLIMITED}, storage_limits={"max_families": 4})
        alice = h.register()
        alice_refresh = h.tokens(alice)["refresh_token"]
        mallory = h.register()
        codes = []
        for _ in range(10):
            result = h.redeem(mallory, *self._code(h, mallory))
            codes.append(result.code)
        self.assertEqual(set(codes), {200})  # mallory's own oldest logins made room
        self.assertEqual(h.refresh(alice, alice_refresh).code, 200)
        bob = h.register()
        refused = h.redeem(bob, *self._code(h, bob))
        self.assertEqual((refused.code, refused.json()["error"]), (503, "temporarily_unavailable"))

    @staticmethod
    def _code(h: AuthServerHarness, client: dict[str, Any]) -> tuple[str, str]:
        verifier, challenge = s256_pair()
        return h.login(client, challenge)["code"], verifier


class TokenRateLimitTests(SynchronousTestCase):
    def test_per_client(self) -> None:
        h = AuthServerHarness({"auth_server": {"token_rate": "3/min"}})
        client = h.register()
        tokens = h.tokens(client)  # one token request
        refresh_token = tokens["refresh_token"]
        for _ in range(2):
            result = h.refresh(client, refresh_token)
            self.assertEqual(result.code, 200)
            refresh_token = result.json()["refresh_token"]
        limited = h.refresh(client, refresh_token)
        self.assertEqual(limited.code, 429)
        self.assertEqual(limited.json()["error"], "too_many_requests")
        self.assertEqual(limited.header("retry-after"), "20")
        # revocation shares the bucket: refresh-and-revoke cycles are what it bounds
        self.assertEqual(revoke(h, client, tokens["access_token"]).code, 429)
        # another client has its own bucket
        self.assertEqual(h.tokens(h.register())["token_type"], "Bearer")
        h.clock.advance(20)
        self.assertEqual(h.refresh(client, refresh_token).code, 200)

    def test_per_source_address(self) -> None:
        h = AuthServerHarness({"auth_server": {"token_source_rate": "2/min"}, **BEHIND_PROXY})
        clients = [h.register() for _ in range(3)]
        from_a = {"X-Forwarded-For": "192.0.2.1"}
        codes = [revoke(h, c, "x", headers=from_a).code for c in clients]
        self.assertEqual(codes, [200, 200, 429])
        limited = revoke(h, clients[2], "x", headers=from_a)
        self.assertEqual(limited.json()["error"], "too_many_requests")
        self.assertEqual(
            revoke(h, clients[2], "x", headers={"X-Forwarded-For": "192.0.2.2"}).code, 200
        )

    def test_forged_forwarded_hops_that_are_not_addresses_choose_no_bucket(self) -> None:
        # Behind a trusted proxy that passes X-Forwarded-For on as it came, every forged
        # value was its own bucket: a client had as many as it cared to invent.
        h = AuthServerHarness({"auth_server": {"token_source_rate": "2/min"}, **BEHIND_PROXY})
        clients = [h.register() for _ in range(3)]
        forged = ["bucket-1", 'x" 200 0 "-', "127.0.0.1, not-an-ip"]
        codes = [
            revoke(h, c, "x", headers={"X-Forwarded-For": f}).code
            for c, f in zip(clients, forged, strict=True)
        ]
        self.assertEqual(codes, [200, 200, 429])

    def test_config_validated(self) -> None:
        base = {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"type": "development"},
        }
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(
                {**base, "auth_server": {"token_rate": "lots", "token_source_rate": "0/s"}}
            )
        text = str(caught.exception)
        self.assertIn("auth_server.token_rate", text)
        self.assertIn("auth_server.token_source_rate", text)
        defaults = config_from_mapping(base).auth_server
        self.assertEqual((defaults.token_rate, defaults.token_source_rate), ("60/min", "600/min"))


class StorageCapConfigTests(SynchronousTestCase):
    BASE = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "backend": {"url": "http://127.0.0.1:9000"},
        "upstream": {"type": "development"},
    }

    def test_defaults_fit_the_worst_case_memory_budget(self) -> None:
        from authproxy.storage.factory import storage_caps

        caps = storage_caps(config_from_mapping(self.BASE))
        self.assertEqual(
            caps,
            {
                "clients": 5000,
                "pending": 10000,
                "codes": 10000,
                "refresh_tokens": 20000,
                "families": 10000,
                "upstream_sessions": 10000,
                "users": 100000,
                "revoked_jtis": 100000,
            },
        )

    def test_validated(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(
                {**self.BASE, "storage": {"max_pending": 0, "max_refresh_tokens": 10000}}
            )
        text = str(caught.exception)
        self.assertIn("storage.max_pending: must be at least 1", text)
        self.assertIn("storage.max_refresh_tokens: must exceed max_logins", text)


class SourceGroupingTests(SynchronousTestCase):
    def test_source_key(self) -> None:
        for address, key in [
            ("192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
            ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
            ("fe80::1%eth0", "fe80::/64"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("unknown", "unknown"),
        ]:
            self.assertEqual(source_key(address), key, address)

    def test_ipv6_slash64_shares_one_registration_bucket(self) -> None:
        """An IPv6 host owns its /64: 2^64 addresses must not mean 2^64 buckets."""
        h = AuthServerHarness({"auth_server": {"registration": {"rate": "2/min"}}, **BEHIND_PROXY})

        def register_from(address: str) -> int:
            return h.request(
                "POST",
                "/oauth/register",
                json_body={"redirect_uris": ["http://127.0.0.1:33418/callback"]},
                headers={"X-Forwarded-For": address},
            ).code

        self.assertEqual(register_from("2001:db8:0:7::1"), 201)
        self.assertEqual(register_from("2001:db8:0:7:aaaa::2"), 201)
        self.assertEqual(register_from("2001:db8:0:7:ffff:ffff:ffff:ffff"), 429)
        self.assertEqual(register_from("2001:db8:0:8::1"), 201)  # the next /64
        self.assertEqual(register_from("192.0.2.1"), 201)
        self.assertEqual(register_from("::ffff:192.0.2.1"), 201)
        self.assertEqual(register_from("192.0.2.1"), 429)  # the mapped form counted as IPv4

    def test_ipv6_slash64_shares_one_authorize_bucket(self) -> None:
        h = AuthServerHarness({"auth_server": {"authorize_rate": "1/min"}, **BEHIND_PROXY})
        client = h.register()
        _, challenge = s256_pair()
        url = h.authorize_url(client, challenge)
        first = h.get(url, headers={"X-Forwarded-For": "2001:db8::1"})
        second = h.get(url, headers={"X-Forwarded-For": "2001:db8::2"})
        self.assertEqual((first.code, second.code), (302, 429))


class PendingFloodTests(SynchronousTestCase):
    def test_flood_from_one_address_never_evicts_another_addresss_login(self) -> None:
        """Issue 15 item 4: logins in progress are owned by their source's /64."""
        h = AuthServerHarness(
            {"auth_server": {"authorize_rate": "1000000/min"}, **BEHIND_PROXY},
            storage_limits={"max_pending": 5},
        )
        client = h.register()
        verifier, challenge = s256_pair()
        alice = {"X-Forwarded-For": "192.0.2.1"}
        to_idp = h.get(h.authorize_url(client, challenge), headers=alice)
        self.assertEqual(to_idp.code, 302)
        for i in range(50):
            flood = h.get(
                h.authorize_url(client, challenge), headers={"X-Forwarded-For": f"2001:db8::{i}"}
            )
            self.assertEqual(flood.code, 302)
        # alice comes back from the IdP: her login in progress is still there
        result = h.get(to_idp.header("location") or "", headers=alice)
        for _ in range(3):
            if result.code != 302 or not (result.header("location") or "").startswith(h.base):
                break
            result = h.get(result.header("location") or "", headers=alice)
        self.assertEqual(result.code, 302)
        code = result.location_params()["code"]
        self.assertEqual(h.redeem(client, code, verifier).code, 200)


class StorageMetricsTests(SynchronousTestCase):
    def test_refusals_counted_by_collection(self) -> None:
        clock = Clock()
        storage = memory_storage(clock, max_revoked_jtis=1)
        metrics = AuthproxyMetrics(route_of=lambda path: "other")
        metrics.add_storage(storage.upkeep)
        self.successResultOf(storage.revocations.revoke_jti("j", 900))
        for _ in range(2):
            self.failureResultOf(storage.families.issuance_room("c", False))
        text = generate_latest(metrics.registry).decode()
        self.assertIn('authproxy_storage_refusals_total{collection="revoked_jtis"} 2.0', text)
        self.assertIn('authproxy_storage_records{collection="revoked_jtis"} 1.0', text)
