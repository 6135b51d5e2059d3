"""The EmbeddedAuthServer CRD's admission rules, evaluated offline.

The API server checks a resource against the CRD's OpenAPI schema and then runs every CEL
rule (``x-kubernetes-validations``) with ``self`` bound to the value at the rule's place in
the schema, for the values present. ``cel_failures`` does the same with cel-python, which
implements the CEL functions these rules use (``size``, ``has``, ``matches`` with RE2's
search semantics, ``contains``, ``endsWith``, ``duration`` with Go duration strings) the
way Kubernetes' CEL does; the rules use none of Kubernetes' own CEL libraries (``url()``,
``isURL``, quantities), so nothing is re-implemented here. The OpenAPI part is checked with
jsonschema (which ignores the ``x-kubernetes-*`` keywords, as it should).

Every rule has a passing case (the examples and the valid variants) and a failing case
(``INVALID``); ``test_every_rule_is_covered`` fails when a rule is added without both.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from twisted.trial.unittest import SynchronousTestCase

KUBERNETES = Path(__file__).resolve().parents[1] / "etc" / "kubernetes"
CRD = yaml.safe_load((KUBERNETES / "crd" / "embeddedauthservers.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
EXAMPLES = {p.stem: yaml.safe_load(p.read_text()) for p in (KUBERNETES / "examples").glob("*.yaml")}

_ENV = celpy.Environment()
_PROGRAMS: dict[str, Any] = {}

Rule = tuple[str, str]  # (where in the schema, the CEL expression)


def _program(rule: str) -> Any:
    if rule not in _PROGRAMS:
        _PROGRAMS[rule] = _ENV.program(_ENV.compile(rule))
    return _PROGRAMS[rule]


def schema_rules(schema: dict[str, Any] = SCHEMA, where: str = "") -> Iterator[Rule]:
    """Every CEL rule of the schema, with the place it applies to."""
    for validation in schema.get("x-kubernetes-validations", ()):
        yield where, validation["rule"]
    for name, child in schema.get("properties", {}).items():
        yield from schema_rules(child, f"{where}.{name}")
    if "items" in schema:
        yield from schema_rules(schema["items"], f"{where}[]")


def evaluate(
    value: Any, schema: dict[str, Any] = SCHEMA, where: str = ""
) -> Iterator[tuple[Rule, str, bool]]:
    """Each rule that applies to ``value`` (present values only, as the API server does):
    the rule, its message, and whether it holds (an evaluation error does not)."""
    for validation in schema.get("x-kubernetes-validations", ()):
        result = _program(validation["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        holds = isinstance(result, celpy.celtypes.BoolType) and bool(result)
        yield (where, validation["rule"]), validation["message"], holds
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from evaluate(value[name], child, f"{where}.{name}")
    if isinstance(value, list) and "items" in schema:
        for item in value:
            yield from evaluate(item, schema["items"], f"{where}[]")


def cel_failures(resource: dict[str, Any]) -> set[str]:
    """The messages of the rules ``resource`` breaks."""
    return {message for _, message, holds in evaluate(resource) if not holds}


def schema_errors(resource: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(resource)]


def variant(example: str, change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """A copy of an example's resource with ``change`` applied to its spec."""
    resource = copy.deepcopy(EXAMPLES[example])
    change(resource["spec"])
    return resource


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets ``spec.<path>`` (dotted; a number indexes a list) to ``value``."""
    *parents, last = path.split(".")

    def change(spec: dict[str, Any]) -> None:
        target: Any = spec
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return change


_DELETE = object()
OIDC = "upstreamProviders.0.oidcConfig"
OAUTH2 = "upstreamProviders.0.oauth2Config"
REF = {"name": "s", "key": "k"}
MESSAGES = {
    "one upstream": "upstreamProviders must have exactly one entry (authproxy fronts one upstream IdP)",
    "issuer https": "issuer must be an https URL (http only for localhost, 127.0.0.0/8 or [::1])",
    "issuer query": "issuer must not have a query or fragment",
    "issuer slash": "issuer must not end with a slash",
    "signing keys": "signingKeySecretRefs must have 1 to 5 entries",
    "hmac": "hmacSecretRefs must have at least one entry",
    "access": "accessTokenLifespan must be within 1m..24h",
    "refresh": "refreshTokenLifespan must be within 1h..720h (30 days)",
    "code": "authCodeLifespan must be within 30s..10m",
    "upstream type": "oidcConfig must be set when type is 'oidc' and oauth2Config when type is "
    "'oauth2' (and the other must not be set)",
    "idp url": "must be an https URL (http only for localhost, 127.0.0.0/8 or [::1])",
    "client id": "clientId is required (authproxy does not register itself at the upstream: no dcrConfig)",
    "userinfo": "userInfo is required: authproxy learns who signed in from the userinfo endpoint",
    "redis": "redis must be set when type is 'redis', and only then",
}

#: Valid resources beyond the examples: the edges of each rule, on the passing side.
VALID = {
    "issuer on 127.0.0.1 over http": variant("oidc", _set("issuer", "http://127.0.0.1:8080")),
    "issuer on localhost with a path": variant("oidc", _set("issuer", "http://localhost/mcp")),
    "issuer on [::1]": variant("oidc", _set("issuer", "http://[::1]:9000")),
    "five signing keys": variant("oidc", _set("signingKeySecretRefs", [REF] * 5)),
    "lifespans at their lower bounds": variant(
        "oidc",
        _set(
            "tokenLifespans",
            {"accessTokenLifespan": "1m", "refreshTokenLifespan": "1h", "authCodeLifespan": "30s"},
        ),
    ),
    "lifespans at their upper bounds": variant(
        "oidc",
        _set(
            "tokenLifespans",
            {
                "accessTokenLifespan": "24h",
                "refreshTokenLifespan": "720h",
                "authCodeLifespan": "10m",
            },
        ),
    ),
    "oauth2 with a revocation endpoint": variant(
        "github", _set(f"{OAUTH2}.revocationEndpoint", "https://github.com/revoke")
    ),
    "oidc IdP on loopback": variant("oidc", _set(f"{OIDC}.issuerUrl", "http://127.0.0.1:3000")),
    "memory storage by default": variant("oidc", _set("storage", {})),
}


def broken(example: str, path: str, value: Any, rule: str) -> tuple[str, dict[str, Any], str]:
    """An ``INVALID`` entry: ``example`` with ``spec.<path>`` set to ``value``, and its rule."""
    return f"{example}: {path} = {value!r}", variant(example, _set(path, value)), rule


#: (what is wrong, the resource, the one message the CEL rules answer with)
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "two upstreams",
        variant(
            "oidc",
            lambda s: s["upstreamProviders"].append(dict(s["upstreamProviders"][0], name="b")),
        ),
        "one upstream",
    ),
    broken("oidc", "issuer", "http://mcp.example.com", "issuer https"),
    broken("oidc", "issuer", "http://localhost.example.com", "issuer https"),
    broken("oidc", "issuer", "https://mcp.example.com?a=b", "issuer query"),
    broken("oidc", "issuer", "https://mcp.example.com#x", "issuer query"),
    broken("oidc", "issuer", "https://mcp.example.com/", "issuer slash"),
    broken("oidc", "signingKeySecretRefs", [], "signing keys"),
    broken("oidc", "signingKeySecretRefs", [REF] * 6, "signing keys"),
    broken("oidc", "hmacSecretRefs", [], "hmac"),
    broken("oidc", "tokenLifespans.accessTokenLifespan", "30s", "access"),
    broken("oidc", "tokenLifespans.accessTokenLifespan", "25h", "access"),
    broken("oidc", "tokenLifespans.refreshTokenLifespan", "30m", "refresh"),
    broken("oidc", "tokenLifespans.refreshTokenLifespan", "721h", "refresh"),
    broken("oidc", "tokenLifespans.authCodeLifespan", "10s", "code"),
    broken("oidc", "tokenLifespans.authCodeLifespan", "10m1s", "code"),
    (
        "oidc with oauth2Config too",
        variant(
            "oidc",
            _set(
                "upstreamProviders.0.oauth2Config",
                EXAMPLES["github"]["spec"]["upstreamProviders"][0]["oauth2Config"],
            ),
        ),
        "upstream type",
    ),
    broken("oidc", OIDC, _DELETE, "upstream type"),
    (
        "oauth2 with oidcConfig",
        variant(
            "github",
            _set("upstreamProviders.0.oidcConfig", {"issuerUrl": "https://i", "clientId": "c"}),
        ),
        "upstream type",
    ),
    broken("oidc", "upstreamProviders.0.type", "saml", "upstream type"),
    broken("oidc", f"{OIDC}.issuerUrl", "http://idp.example.com", "idp url"),
    *(
        broken("github", f"{OAUTH2}.{field}", url, "idp url")
        for field, url in (
            ("authorizationEndpoint", "http://github.com/login"),
            ("tokenEndpoint", "http://github.com/token"),
            ("revocationEndpoint", "http://github.com/revoke"),
            ("userInfo.endpointUrl", "http://api.github.com/user"),
        )
    ),
    broken("github", f"{OAUTH2}.clientId", _DELETE, "client id"),
    broken("github", f"{OAUTH2}.clientId", "", "client id"),
    broken("github", f"{OAUTH2}.userInfo", _DELETE, "userinfo"),
    broken("oidc", "storage", {"type": "redis"}, "redis"),
    broken("github", "storage.type", "memory", "redis"),
]


class CELRuleTests(SynchronousTestCase):
    def test_examples_and_valid_variants_pass(self) -> None:
        for name, resource in [*EXAMPLES.items(), *VALID.items()]:
            with self.subTest(resource=name):
                self.assertEqual(cel_failures(resource), set())
                self.assertEqual(schema_errors(resource), [])

    def test_each_invalid_resource_breaks_its_rule(self) -> None:
        for what, resource, rule in INVALID:
            with self.subTest(what):
                self.assertEqual(cel_failures(resource), {MESSAGES[rule]})

    def test_every_rule_is_covered(self) -> None:
        rules = set(schema_rules())
        passed = {
            rule for r in [*EXAMPLES.values(), *VALID.values()] for rule, _, ok in evaluate(r) if ok
        }
        failed = {rule for _, r, _ in INVALID for rule, _, ok in evaluate(r) if not ok}
        self.assertEqual(rules - passed, set(), "rules without a passing case")
        self.assertEqual(rules - failed, set(), "rules without a failing case")

    def test_messages_are_the_crds(self) -> None:
        def messages(schema: dict[str, Any]) -> Iterator[str]:
            yield from (v["message"] for v in schema.get("x-kubernetes-validations", ()))
            for child in schema.get("properties", {}).values():
                yield from messages(child)
            if "items" in schema:
                yield from messages(schema["items"])

        self.assertEqual(set(messages(SCHEMA)), set(MESSAGES.values()))


class OpenAPISchemaTests(SynchronousTestCase):
    def test_both_examples_exist(self) -> None:
        self.assertEqual(sorted(EXAMPLES), ["github", "oidc"])
        types = {r["spec"]["upstreamProviders"][0]["type"] for r in EXAMPLES.values()}
        self.assertEqual(types, {"oidc", "oauth2"})

    def test_schema_refuses(self) -> None:
        cases = {
            "a day-unit duration (CEL's duration() has none)": variant(
                "oidc", _set("tokenLifespans.accessTokenLifespan", "1d")
            ),
            "an upper-case provider name": variant(
                "oidc", _set("upstreamProviders.0.name", "Okta")
            ),
            "a reference without its key": variant("oidc", _set("hmacSecretRefs", [{"name": "s"}])),
            "a backend URL without a scheme": variant(
                "oidc", _set("backend.url", "weather-mcp:9000")
            ),
            "a Redis address without a port": variant(
                "github", _set("storage.redis.addr", "redis")
            ),
            "a transport authproxy does not speak": variant(
                "oidc", _set("backend.transport", "stdio")
            ),
            "no backend": variant("oidc", _set("backend", _DELETE)),
        }
        for what, resource in cases.items():
            with self.subTest(what):
                self.assertNotEqual(schema_errors(resource), [])
