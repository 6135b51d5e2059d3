"""Configuration loading: schema, derived defaults, and one precise line per problem."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import (
    ConfigError,
    Rate,
    Secret,
    config_from_mapping,
    load_config,
    parse_duration,
    parse_size,
    startup_check,
    validate_config,
)

OIDC_UPSTREAM = {"type": "oidc", "issuer_url": "https://idp.example", "client_id": "authproxy"}


def minimal(**sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "server": {"public_url": "http://127.0.0.1:8080"},
        "backend": {"url": "http://127.0.0.1:9000"},
        "upstream": {"type": "development"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


class ParsingTests(SynchronousTestCase):
    def test_durations(self) -> None:
        table = {
            "30s": 30,
            "5m": 300,
            "1h": 3600,
            "7d": 604800,
            "1h30m": 5400,
            "1d2h3m4s": 93784,
            "500ms": 0.5,
        }
        for text, seconds in table.items():
            self.assertEqual(parse_duration(text), seconds, text)
        for bad in ("", "90x", "5", "m5", "1h 30m", "-1s", True, None, "5m junk", 90, 1.5):
            self.assertRaises(ValueError, parse_duration, bad)

    def test_sizes(self) -> None:
        table = {"512KiB": 524288, "4MiB": 4194304, "1GiB": 1024**3, "10KB": 10000, "100B": 100}
        for text, size in table.items():
            self.assertEqual(parse_size(text), size, text)
        for bad in ("4 megs", "-1", "1.5MiB", "", None, "100", 4, True):
            self.assertRaises(ValueError, parse_size, bad)


class ExampleTests(SynchronousTestCase):
    def test_json_accepted(self) -> None:
        path = Path(self.mktemp() + ".json")
        path.write_text(json.dumps(minimal()))
        self.assertEqual(load_config(path).backend.path, "/mcp")


class DerivedDefaultTests(SynchronousTestCase):
    def test_defaults_derive_from_public_url(self) -> None:
        config = config_from_mapping(minimal())
        self.assertEqual(config.auth_server.issuer, "http://127.0.0.1:8080")
        self.assertEqual(config.upstream.redirect_uri, "http://127.0.0.1:8080/oauth/callback")
        self.assertEqual(config.auth_server.allowed_audiences, ("http://127.0.0.1:8080/mcp",))
        self.assertEqual(config.upstream.name, "development")

    def test_sse_path(self) -> None:
        config = config_from_mapping(minimal(backend={"transport": "sse"}))
        self.assertEqual(config.backend.path, "/sse")
        self.assertEqual(config.auth_server.allowed_audiences, ("http://127.0.0.1:8080/sse",))

    def test_redirect_uri_is_where_the_callback_is_mounted(self) -> None:
        # The callback is mounted at public_url's root whatever the issuer says: an issuer
        # with a path (or another host) is an identifier, not where the endpoints live, and
        # the login cookie set at public_url's /oauth/authorize only returns to that host.
        for issuer in ("http://127.0.0.1:8080/auth", "http://localhost:9999"):
            config = config_from_mapping(minimal(auth_server={"issuer": issuer}))
            self.assertEqual(
                config.upstream.redirect_uri, "http://127.0.0.1:8080/oauth/callback", issuer
            )


class ValidationTests(SynchronousTestCase):
    def problems(self, data: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(data, environ=environ or {})
        return caught.exception.problems

    def assertProblem(self, data: dict[str, Any], path: str, fragment: str = "") -> None:
        problems = self.problems(data)
        matching = [p for p in problems if p.startswith(path + ":") and fragment in p]
        self.assertTrue(matching, f"no problem for {path!r} ({fragment!r}) in {problems}")

    def test_url_rules(self) -> None:
        for url, fragment in [
            ("https://mcp.example.com/", "slash"),
            ("https://mcp.example.com?x=1", "query"),
            ("https://mcp.example.com#f", "fragment"),
            ("http://mcp.example.com", "https"),
            ("ftp://mcp.example.com", "http(s)"),
            ("mcp.example.com", "http(s)"),
        ]:
            self.assertProblem(minimal(server={"public_url": url}), "server.public_url", fragment)
            self.assertProblem(minimal(auth_server={"issuer": url}), "auth_server.issuer", fragment)
        for bad in ("http://[::1", "https://h.example:99999"):
            self.assertProblem(minimal(server={"public_url": bad}), "server.public_url", "valid")
            self.assertProblem(minimal(backend={"url": bad}), "backend.url", "valid")
            self.assertProblem(
                minimal(server={"allowed_origins": [bad]}), "server.allowed_origins[0]"
            )
        for ok in ("http://localhost:1", "http://127.0.0.5", "http://[::1]:8", "https://a.b/x"):
            config_from_mapping(minimal(server={"public_url": ok}))

    def test_upstream_authorize_params(self) -> None:
        for reserved in ("client_id", "redirect_uri", "state", "scope", "nonce", "response_type"):
            self.assertProblem(
                minimal(upstream={**OIDC_UPSTREAM, "authorize_params": {reserved: "x"}}),
                f"upstream.authorize_params.{reserved}",
                "set by authproxy",
            )
        params = {"authorize_params": {"access_type": "offline"}}
        config = config_from_mapping(minimal(upstream={**OIDC_UPSTREAM, **params}))
        self.assertEqual(config.upstream.authorize_params, {"access_type": "offline"})
        self.assertProblem(minimal(upstream=params), "upstream.authorize_params", "does not apply")

    def test_subject_claim(self) -> None:
        self.assertProblem(
            minimal(upstream={**OIDC_UPSTREAM, "subject_claim": ""}), "upstream.subject_claim"
        )
        self.assertProblem(
            minimal(upstream={"subject_claim": "oid"}), "upstream.subject_claim", "does not apply"
        )

    def test_subject_never_a_claim_users_can_change(self) -> None:
        # review 2 F6 (nOAuth): a subject a user can set lets them become another user
        for claim in ("email", "preferred_username", "upn", "name", "nickname", "unique_name"):
            self.assertProblem(
                minimal(upstream={**OIDC_UPSTREAM, "subject_claim": claim}),
                "upstream.subject_claim",
                "the user can change",
            )
        for fields in (["email"], ["id", "login"], ["data.username"]):
            userinfo = {"endpoint_url": "https://idp.example/user", "subject_fields": fields}
            upstream = {
                "type": "oauth2",
                "client_id": "c",
                "authorization_endpoint": "https://idp.example/authorize",
                "token_endpoint": "https://idp.example/token",
                "userinfo": userinfo,
            }
            self.assertProblem(
                minimal(upstream=upstream),
                "upstream.userinfo.subject_fields",
                "the user can change",
            )
        for claim in ("sub", "oid", "EMAIL_ID"):
            config_from_mapping(minimal(upstream={**OIDC_UPSTREAM, "subject_claim": claim}))

    def test_allowed_hosts(self) -> None:
        for bad in ("https://a.example", "a.example:8080", "a.example/x", "*.a.example", ""):
            self.assertProblem(
                minimal(server={"allowed_hosts": [bad]}), "server.allowed_hosts[0]", "host name"
            )
        hosts = ["*", "MCP.Example.com", "10.0.0.1", "::1", "svc-1.ns.svc"]
        config = config_from_mapping(minimal(server={"allowed_hosts": hosts}))
        self.assertEqual(config.server.allowed_hosts, tuple(hosts))

    def test_lifespan_bounds(self) -> None:
        for field, bad in [
            ("access_token_lifespan", "59s"),
            ("access_token_lifespan", "25h"),
            ("refresh_token_lifespan", "59m"),
            ("refresh_token_lifespan", "31d"),
            ("auth_code_lifespan", "29s"),
            ("auth_code_lifespan", "11m"),
        ]:
            self.assertProblem(minimal(auth_server={field: bad}), f"auth_server.{field}", "outside")

    def test_connection_bounds(self) -> None:
        server = config_from_mapping(minimal()).server
        self.assertEqual(
            (server.header_timeout, server.idle_timeout, server.max_connections),
            (10.0, 60.0, 4096),
        )
        self.assertEqual(server.max_connections_per_source, 256)
        for field, bad in [
            ("header_timeout", "0s"),
            ("header_timeout", "6m"),
            ("idle_timeout", "500ms"),
            ("idle_timeout", "2d"),
            ("max_connections", 15),
            ("max_connections_per_source", 0),
        ]:
            self.assertProblem(minimal(server={field: bad}), f"server.{field}", "outside")
        self.assertProblem(
            minimal(server={"max_connections": 100, "max_connections_per_source": 101}),
            "server.max_connections_per_source",
            "outside",
        )

    def test_bad_duration_names_field(self) -> None:
        self.assertEqual(
            self.problems(minimal(auth_server={"access_token_lifespan": "90x"})),
            [
                'auth_server.access_token_lifespan: "90x" is not a duration '
                "(examples: 30s, 5m, 1h30m, 7d)"
            ],
        )

    def test_listen_strings(self) -> None:
        self.assertProblem(minimal(server={"listen": ["tcp:notaport"]}), "server.listen[0]")
        self.assertProblem(
            minimal(server={"listen": ["tcp:1", "bogus:thing"]}), "server.listen[1]", "endpoint"
        )

    def test_metrics_listen(self) -> None:
        self.assertProblem(
            minimal(server={"metrics_listen": "bogus:thing"}), "server.metrics_listen", "endpoint"
        )
        same = {"listen": ["tcp:8080"], "metrics_listen": "tcp:8080"}
        self.assertProblem(minimal(server=same), "server.metrics_listen", "of its own")
        config = config_from_mapping(minimal(server={"metrics_listen": "tcp:9100"}), environ={})
        self.assertEqual(config.server.metrics_listen, "tcp:9100")

    def test_oidc_needs_issuer_url_and_refuses_oauth2_fields(self) -> None:
        data = minimal(upstream={"type": "oidc", "client_id": "x", "token_endpoint": "https://t"})
        problems = self.problems(data)
        self.assertIn('upstream.issuer_url: is required for type "oidc"', problems)
        self.assertIn('upstream.token_endpoint: does not apply to type "oidc"', problems)

    def test_revocation_endpoint_checked_and_refused_for_development(self) -> None:
        base = {"type": "oidc", "client_id": "x", "issuer_url": "https://idp.example"}
        self.assertProblem(
            minimal(upstream={**base, "revocation_endpoint": "/revoke"}),
            "upstream.revocation_endpoint",
            "absolute",
        )
        ok = config_from_mapping(
            minimal(upstream={**base, "revocation_endpoint": "https://idp.example/revoke"}),
            environ={},
        )
        self.assertEqual(ok.upstream.revocation_endpoint, "https://idp.example/revoke")
        self.assertIn(
            'upstream.revocation_endpoint: does not apply to type "development"',
            self.problems(
                minimal(upstream={"type": "development", "revocation_endpoint": "https://r"})
            ),
        )

    def test_oauth2_needs_endpoints(self) -> None:
        data = minimal(upstream={"type": "oauth2", "client_id": "x", "issuer_url": "https://i"})
        problems = self.problems(data)
        for field in ("authorization_endpoint", "token_endpoint", "userinfo.endpoint_url"):
            self.assertIn(f'upstream.{field}: is required for type "oauth2"', problems)
        self.assertIn('upstream.issuer_url: does not apply to type "oauth2"', problems)

    def test_oauth2_complete(self) -> None:
        config = config_from_mapping(
            minimal(
                upstream={
                    "type": "oauth2",
                    "client_id": "x",
                    "authorization_endpoint": "https://github.com/login/oauth/authorize",
                    "token_endpoint": "https://github.com/login/oauth/access_token",
                    "userinfo": {"endpoint_url": "https://api.github.com/user"},
                }
            )
        )
        assert config.upstream.userinfo is not None
        self.assertEqual(config.upstream.userinfo.subject_fields, ("sub", "id"))
        self.assertIsNone(config.upstream.client_secret)  # neither: a public client

    def test_client_secret_file_wins_over_env(self) -> None:
        secret = Path(self.mktemp())
        secret.write_text("from-file")
        data = minimal(
            upstream={
                "type": "oidc",
                "issuer_url": "https://idp.example.com",
                "client_id": "x",
                "client_secret_file": str(secret),
                "client_secret_env": "SECRET_VAR",
            }
        )
        config = config_from_mapping(data, environ={"SECRET_VAR": "from-env"})
        assert config.upstream.client_secret is not None
        self.assertEqual(config.upstream.client_secret.reveal(), "from-file")

    def test_client_secret_errors_never_show_the_secret(self) -> None:
        base = {"type": "oidc", "issuer_url": "https://idp.example.com", "client_id": "x"}
        missing = minimal(upstream={**base, "client_secret_file": "/nonexistent/secret"})
        self.assertProblem(missing, "upstream.client_secret_file", "cannot read")
        empty_env = minimal(upstream={**base, "client_secret_env": "EMPTY_VAR"})
        self.assertEqual(
            self.problems(empty_env, {"EMPTY_VAR": "  "}),
            ["upstream.client_secret_env: the environment variable EMPTY_VAR is not set or empty"],
        )
        config = config_from_mapping(
            minimal(upstream={**base, "client_secret_env": "V"}), environ={"V": "hunter2-secret"}
        )
        self.assertNotIn("hunter2-secret", repr(config))
        self.assertNotIn("hunter2-secret", str(config.upstream.client_secret))

    def test_unreadable_or_empty_secret_file(self) -> None:
        base = {"type": "oidc", "issuer_url": "https://i.example", "client_id": "x"}
        # A directory cannot be read as a file, even by root.
        directory = self.mktemp()
        os.makedirs(directory)
        data = minimal(upstream={**base, "client_secret_file": directory})
        self.assertProblem(data, "upstream.client_secret_file", "cannot read")
        empty = Path(self.mktemp())
        empty.write_text("  \n")
        data = minimal(upstream={**base, "client_secret_file": str(empty)})
        self.assertProblem(data, "upstream.client_secret_file", "is empty")

    def test_trusted_proxies(self) -> None:
        self.assertProblem(
            minimal(server={"trusted_proxies": ["10.0.0.0/8", "nope"]}),
            "server.trusted_proxies[1]",
            "CIDR",
        )
        config_from_mapping(minimal(server={"trusted_proxies": ["10.0.0.0/8", "::1/128"]}))

    def test_unknown_key(self) -> None:
        self.assertEqual(
            self.problems(minimal(server={"lisen": ["tcp:1"]})), ["server.lisen: unknown key"]
        )
        self.assertEqual(self.problems({**minimal(), "extra": {}}), ["extra: unknown key"])

    def test_wrong_type(self) -> None:
        self.assertProblem(minimal(server={"listen": "tcp:8080"}), "server.listen")
        self.assertProblem(minimal(backend={"connect_timeout": True}), "backend.connect_timeout")

    def test_backend_caps(self) -> None:
        config = config_from_mapping(minimal(), environ={})
        backend = config.backend
        self.assertEqual((backend.max_connections, backend.max_connections_per_grant), (256, 16))
        self.assertEqual((backend.max_sessions, backend.max_sessions_per_grant), (10000, 32))
        self.assertEqual(backend.session_idle_timeout, 3600)
        for field in (
            "max_connections",
            "max_connections_per_grant",
            "max_sessions",
            "max_sessions_per_grant",
        ):
            self.assertProblem(minimal(backend={field: 0}), f"backend.{field}", "at least 1")
        self.assertProblem(
            minimal(backend={"session_idle_timeout": "30s"}), "backend.session_idle_timeout"
        )

    def test_three_mistakes_three_lines(self) -> None:
        data = minimal(
            server={"public_url": "https://x.example/"},
            auth_server={"auth_code_lifespan": "1h", "consent": "sometimes"},
        )
        problems = self.problems(data)
        self.assertEqual(len(problems), 3, problems)
        self.assertEqual(
            [p.split(":")[0] for p in problems],
            ["server.public_url", "auth_server.auth_code_lifespan", "auth_server.consent"],
        )

    def test_missing_required(self) -> None:
        self.assertProblem({"server": {}, "backend": {}, "upstream": {}}, "server.public_url")

    def test_unreadable_file_and_bad_toml(self) -> None:
        path = Path(self.mktemp() + ".toml")
        path.write_text("[server\n")
        with self.assertRaises(ConfigError) as caught:
            load_config(path)
        self.assertIn("not valid toml", caught.exception.problems[0])
        with self.assertRaises(ConfigError):
            load_config("/nonexistent/authproxy.toml")


class ValueTypeTests(SynchronousTestCase):
    """Rates, sizes and enumerated fields arrive parsed; consumers never re-parse strings."""

    def test_rates_are_parsed_once(self) -> None:
        auth = config_from_mapping(
            minimal(auth_server={"token_rate": "3/min", "registration": {"rate": "100/hour"}})
        ).auth_server
        self.assertIsInstance(auth.token_rate, Rate)
        self.assertEqual((auth.token_rate.events, auth.token_rate.period), (3, 60.0))
        self.assertEqual(auth.token_rate, "3/min")  # still the text the operator wrote
        registration = auth.registration.rate
        self.assertEqual((registration.events, registration.period), (100, 3600.0))
        self.assertEqual((auth.authorize_rate.events, auth.authorize_rate.period), (120, 60.0))
        self.assertRaises(ValueError, Rate, "0/s")

    def test_sizes_are_bytes(self) -> None:
        server = config_from_mapping(minimal(server={"max_request_body": "512KiB"})).server
        self.assertEqual(server.max_request_body, 524288)

    def test_enumerated_fields_fold_case_only_where_it_is_ignored(self) -> None:
        config = config_from_mapping(
            minimal(
                upstream={
                    "type": "oauth2",
                    "client_id": "x",
                    "authorization_endpoint": "https://a.example",
                    "token_endpoint": "https://t.example",
                    "userinfo": {"endpoint_url": "https://u.example", "http_method": "post"},
                },
                logging={"level": "DEBUG"},
            )
        )
        assert config.upstream.userinfo is not None
        self.assertEqual(config.upstream.userinfo.http_method, "POST")
        self.assertEqual(config.logging.level, "debug")
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(minimal(auth_server={"consent": "Remember"}))
        self.assertEqual(
            caught.exception.problems,
            ['auth_server.consent: "Remember" is not remember, always or skip'],
        )


class StartupCheckTests(SynchronousTestCase):
    """Validation reads nothing; the startup check reads files and the environment."""

    OIDC = {"type": "oidc", "issuer_url": "https://idp.example.com", "client_id": "x"}

    def test_validation_reads_no_secret_file(self) -> None:
        missing = minimal(upstream={**self.OIDC, "client_secret_file": "/nonexistent/secret"})
        config = validate_config(missing)  # no ConfigError: the file is not looked at
        self.assertIsNone(config.upstream.client_secret)
        with self.assertRaises(ConfigError) as caught:
            startup_check(config, environ={})
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertTrue(
            caught.exception.problems[0].startswith(
                'upstream.client_secret_file: cannot read "/nonexistent/secret"'
            )
        )

    def test_validation_reads_no_environment(self) -> None:
        config = validate_config(minimal(upstream={**self.OIDC, "client_secret_env": "V"}))
        self.assertIsNone(config.upstream.client_secret)
        resolved = startup_check(config, environ={"V": "from-env"})
        assert resolved.upstream.client_secret is not None
        self.assertEqual(resolved.upstream.client_secret.reveal(), "from-env")

    def test_listen_endpoints_are_parsed_at_startup(self) -> None:
        # An ssl: endpoint reads its key files when parsed: that is startup, not validation.
        listen = [
            "tcp:1:interface=127.0.0.1",
            "ssl:8443:privateKey=/nonexistent/key.pem:interface=127.0.0.1",
        ]
        config = validate_config(minimal(server={"listen": listen}))
        with self.assertRaises(ConfigError) as caught:
            startup_check(config, environ={})
        self.assertEqual([p.split(":")[0] for p in caught.exception.problems], ["server.listen[1]"])

    def test_both_passes_report_in_one_round(self) -> None:
        data = minimal(
            upstream={**self.OIDC, "client_secret_file": "/nonexistent/secret"},
            logging={"format": "yaml"},
        )
        with self.assertRaises(ConfigError) as caught:
            config_from_mapping(data, environ={})
        self.assertEqual(
            [p.split(":")[0] for p in caught.exception.problems],
            ["logging.format", "upstream.client_secret_file"],
        )

    def test_production_code_never_imports_twisted_test_fakes(self) -> None:
        package = Path(__file__).parent.parent / "authproxy"
        for module in package.rglob("*.py"):
            if module.parts[-2] == "testing":
                continue
            self.assertNotIn("twisted.internet.testing", module.read_text(), str(module))


class RedisStorageConfigTests(SynchronousTestCase):
    """``[storage]`` for Redis: one line per problem; the password file is read at startup."""

    problems = ValidationTests.problems
    assertProblem = ValidationTests.assertProblem

    def redis(self, **keys: Any) -> dict[str, Any]:
        return minimal(storage={"type": "redis", "url": "redis://127.0.0.1:6379/0", **keys})

    def test_bad_urls(self) -> None:
        for url, fragment in [
            ("http://127.0.0.1:6379", "redis://"),
            ("redis://:hunter2@127.0.0.1/0", "password_file"),
            ("redis://127.0.0.1:99999/0", "not a URL"),
            ("redis://127.0.0.1/zero", "number"),
            ("redis:///0", "host"),
            ("unix://relative.sock", "absolute"),
        ]:
            self.assertProblem(self.redis(url=url), "storage.url", fragment)
        problems = self.problems(self.redis(url="redis://:hunter2@h/0"))
        self.assertFalse(any("hunter2" in p for p in problems), problems)

    def test_good_urls_leave_no_problem(self) -> None:
        for url in ("redis://h/0", "rediss://h:6380/2", "unix:///run/redis.sock?db=1"):
            self.assertEqual(config_from_mapping(self.redis(url=url), environ={}).storage.url, url)

    def test_ca_file_only_with_tls(self) -> None:
        self.assertProblem(self.redis(ca_file="/etc/ca.pem"), "storage.ca_file", "rediss://")

    def test_unreadable_or_not_pem_ca_file_is_one_line(self) -> None:
        missing = self.mktemp()
        not_pem = Path(self.mktemp())
        not_pem.write_text("not a certificate")
        for path, why in [(missing, "cannot read"), (str(not_pem), "is not a PEM certificate")]:
            data = self.redis(url="rediss://h/0", ca_file=path)
            with self.assertRaises(ConfigError) as caught:
                startup_check(validate_config(data), environ={})
            (problem,) = caught.exception.problems
            self.assertTrue(problem.startswith("storage.ca_file: "), problem)
            self.assertIn(why, problem)
            self.assertIn(path, problem)

    def test_url_required_unknown_key_sentinels(self) -> None:
        self.assertProblem(minimal(storage={"type": "redis"}), "storage.url", "required")
        self.assertProblem(self.redis(database=1), "storage.database", "unknown key")
        self.assertProblem(self.redis(sentinels=["10.0.0.5"]), "storage.sentinels[0]", "host:port")
        self.assertProblem(self.redis(sentinels=["10.0.0.5:26379"]), "storage.sentinel_master")
        self.assertProblem(self.redis(key_prefix=""), "storage.key_prefix")

    def test_redis_keys_only_with_type_redis(self) -> None:
        self.assertProblem(minimal(storage={"url": "redis://h/0"}), "storage.url", "only for")

    def test_password_file_read_only_at_startup(self) -> None:
        # validation never opens it (the storage is set after validation)
        config = validate_config(minimal())
        storage = attrs.evolve(config.storage, password_file="/nonexistent/redis-password")
        config = attrs.evolve(config, storage=storage)
        with self.assertRaises(ConfigError) as caught:
            startup_check(config, environ={})
        self.assertEqual(len(caught.exception.problems), 1)
        self.assertTrue(
            caught.exception.problems[0].startswith(
                'storage.password_file: cannot read "/nonexistent/redis-password"'
            )
        )
        secret = Path(self.mktemp())
        secret.write_text("hunter2\n")
        storage = attrs.evolve(storage, password_file=str(secret))
        checked = startup_check(attrs.evolve(config, storage=storage), environ={})
        self.assertEqual(checked.storage.password, Secret("hunter2"))
        self.assertNotIn("hunter2", repr(checked))

    def test_sentinels_with_master_are_accepted(self) -> None:
        data = self.redis(
            url="rediss://mymaster/1",
            sentinels=["10.0.0.5:26379", "[::1]:26380"],
            sentinel_master="mymaster",
            ca_file="/etc/authproxy/redis-ca.pem",
        )
        storage = validate_config(data).storage
        self.assertEqual(storage.sentinels, ("10.0.0.5:26379", "[::1]:26380"))
        self.assertEqual(storage.sentinel_master, "mymaster")

    def test_sentinels_need_a_tcp_url(self) -> None:
        data = self.redis(
            url="unix:///run/redis.sock", sentinels=["10.0.0.5:26379"], sentinel_master="m"
        )
        self.assertEqual(
            self.problems(data),
            ["storage.sentinels: need a redis:// or rediss:// url, not unix://"],
        )


class ClientMetadataDocumentsConfigTests(SynchronousTestCase):
    """``[auth_server.client_metadata_documents]`` and ``[auth_server.registration] enabled``."""

    def test_defaults(self) -> None:
        auth = config_from_mapping(minimal(), environ={}).auth_server
        cimd = auth.client_metadata_documents
        self.assertEqual(
            (cimd.enabled, cimd.allowed_hosts, cimd.max_document_size, cimd.fetch_timeout),
            (True, (), 5 * 1024, 5.0),
        )
        self.assertEqual((cimd.cache_max_age, cimd.allow_loopback), (86400.0, False))
        self.assertIs(auth.registration.enabled, True)

    def test_values_are_parsed_and_checked(self) -> None:
        section = {
            "allowed_hosts": ["vscode.dev", "*.example.com"],
            "max_document_size": "8KiB",
            "fetch_timeout": "2s",
            "cache_max_age": "1h",
        }
        auth = config_from_mapping(
            minimal(auth_server={"client_metadata_documents": section}), environ={}
        ).auth_server
        self.assertEqual(auth.client_metadata_documents.max_document_size, 8192)
        path = "auth_server.client_metadata_documents"
        for values, field, fragment in [
            ({"allowed_hosts": ["Bad Host"]}, "allowed_hosts[0]", "host name"),
            ({"allowed_hosts": ["a.*.example"]}, "allowed_hosts[0]", "host name"),
            ({"max_document_size": "10MiB"}, "max_document_size", "between"),
            ({"fetch_timeout": "5m"}, "fetch_timeout", "outside"),
            ({"cache_max_age": "90d"}, "cache_max_age", "outside"),
            ({"allow_loopback": "yes"}, "allow_loopback", "true or false"),
            ({"surprise": 1}, "surprise", "unknown key"),
        ]:
            with self.assertRaises(ConfigError) as caught:
                config_from_mapping(minimal(auth_server={"client_metadata_documents": values}))
            problems = caught.exception.problems
            self.assertTrue(
                any(p.startswith(f"{path}.{field}") and fragment in p for p in problems), problems
            )
