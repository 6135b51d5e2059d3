"""The upstream type registry: per-type config rules, refused fields, and construction."""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from authproxy.config import Config, ConfigError, UserinfoConfig, validate_config
from authproxy.storage.memory import memory_storage
from authproxy.upstream.development import DevelopmentProvider
from authproxy.upstream.kind import UpstreamType
from authproxy.upstream.oauth2 import OAuth2Provider
from authproxy.upstream.oidc import OIDCProvider
from authproxy.upstream.registry import UPSTREAM_TYPES, UpstreamTypes


def config(**upstream: Any) -> Config:
    """A Config as validation would see it (built without validating, to test the rules)."""
    valid = validate_config(
        {
            "server": {"public_url": "http://127.0.0.1:8080"},
            "backend": {"url": "http://127.0.0.1:9000"},
            "upstream": {"type": "development"},
        }
    )
    return attrs.evolve(valid, upstream=attrs.evolve(valid.upstream, **upstream))


def _no_problems(config: Config) -> list[str]:
    return []


def _built(config: Config, storage: Any, reactor: Any, http: Any, reachability: Any) -> Any:
    return ("built", config.upstream.type, http)


SAML = UpstreamType("saml", fields=("issuer_url",), config_problems=_no_problems, build=_built)
PLAIN = UpstreamType("plain", fields=(), config_problems=_no_problems, build=_built)


class RegistryTests(SynchronousTestCase):
    def test_registered_types(self) -> None:
        self.assertEqual(UPSTREAM_TYPES.names, ("oidc", "oauth2", "development"))

    def test_unknown_type_lists_the_registered_types(self) -> None:
        self.assertEqual(
            UPSTREAM_TYPES.config_problems(config(type="saml")),
            ['upstream.type: "saml" is not oidc, oauth2 or development'],
        )
        self.assertEqual(
            UpstreamTypes((SAML, PLAIN)).config_problems(config(type="x")),
            ['upstream.type: "x" is not saml or plain'],
        )

    def test_a_types_fields_are_refused_by_the_others(self) -> None:
        registry = UpstreamTypes((SAML, PLAIN))
        self.assertEqual(registry.config_problems(config(type="saml", issuer_url="https://i")), [])
        self.assertEqual(
            registry.config_problems(config(type="plain", issuer_url="https://i")),
            ['upstream.issuer_url: does not apply to type "plain"'],
        )

    def test_build_dispatches_on_type(self) -> None:
        registry = UpstreamTypes((SAML, PLAIN))
        clock = Clock()
        built = registry.build(
            config(type="plain"), memory_storage(clock).upstream_sessions, clock, http="h"
        )
        self.assertEqual(built, ("built", "plain", "h"))
        error = self.assertRaises(
            ConfigError,
            registry.build,
            config(type="oidc"),
            memory_storage(clock).upstream_sessions,
            clock,
        )
        self.assertEqual(error.problems, ['upstream.type: "oidc" is not saml or plain'])

    def test_builds_each_registered_type(self) -> None:
        clock = Clock()
        oauth2 = config(
            type="oauth2",
            client_id="c",
            authorization_endpoint="https://idp.example/authorize",
            token_endpoint="https://idp.example/token",
            userinfo=_userinfo("https://idp.example/user"),
        )
        cases = [
            (config(type="oidc", client_id="c", issuer_url="https://idp.example"), OIDCProvider),
            (oauth2, OAuth2Provider),
            (config(), DevelopmentProvider),
        ]
        for cfg, kind in cases:
            provider = UPSTREAM_TYPES.build(
                cfg, memory_storage(clock).upstream_sessions, clock, http=object()
            )
            self.assertIsInstance(provider, kind)


def _userinfo(url: str) -> UserinfoConfig:
    return UserinfoConfig(endpoint_url=url)


class TypeRuleTests(SynchronousTestCase):
    """Each type's own validator, asked through the registry."""

    def test_oidc(self) -> None:
        self.assertEqual(
            UPSTREAM_TYPES.config_problems(config(type="oidc", revocation_endpoint="/r")),
            [
                'upstream.issuer_url: is required for type "oidc"',
                'upstream.client_id: is required for type "oidc"',
                'upstream.revocation_endpoint: "/r" must be an absolute http(s) URL',
            ],
        )
        ok = config(type="oidc", client_id="c", issuer_url="https://idp.example")
        self.assertEqual(UPSTREAM_TYPES.config_problems(ok), [])

    def test_oauth2(self) -> None:
        self.assertEqual(
            UPSTREAM_TYPES.config_problems(
                config(type="oauth2", client_id="c", token_endpoint="ftp://t")
            ),
            [
                'upstream.authorization_endpoint: is required for type "oauth2"',
                'upstream.token_endpoint: "ftp://t" must be an absolute http(s) URL',
                'upstream.userinfo.endpoint_url: is required for type "oauth2"',
            ],
        )
        bad_userinfo = config(
            type="oauth2",
            client_id="c",
            authorization_endpoint="https://a.example",
            token_endpoint="https://t.example",
            userinfo=_userinfo("user"),
        )
        self.assertEqual(
            UPSTREAM_TYPES.config_problems(bad_userinfo),
            ['upstream.userinfo.endpoint_url: "user" must be an absolute http(s) URL'],
        )

    def test_development_is_loopback_only_and_takes_no_idp_fields(self) -> None:
        public = config(revocation_endpoint="https://r.example")
        public = attrs.evolve(public, server=attrs.evolve(public.server, listen=("tcp:8080",)))
        problems = UPSTREAM_TYPES.config_problems(public)
        self.assertEqual(
            [p.split(":", 1)[0] for p in problems],
            ["upstream.revocation_endpoint", "server.listen[0]"],
        )
        self.assertIn("not a loopback address", problems[1])
        self.assertEqual(UPSTREAM_TYPES.config_problems(config()), [])
