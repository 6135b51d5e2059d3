"""``authproxy kube render``: the objects an EmbeddedAuthServer resource renders to."""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml
from twisted.trial.unittest import SynchronousTestCase

from authproxy.command import main
from authproxy.config import validate_config
from authproxy.kube.configuration import HMAC_DIR, KEYS_DIR, REDIS_DIR, UPSTREAM_DIR, to_toml
from authproxy.kube.render import render
from authproxy.kube.resource import ResourceError, load_resource
from authproxy.ops.check import check_config
from authproxy.testing import KubeletDir, ec_pem, hmac_secret
from tests.kube_objects import pod_volumes, projected_files, shutdown_slack, strategic_merge

KUBERNETES = Path(__file__).resolve().parents[1] / "etc" / "kubernetes"
EXAMPLES = {p.stem: p for p in (KUBERNETES / "examples").glob("*.yaml")}
SHIPPED = {d["kind"]: d for d in yaml.safe_load_all((KUBERNETES / "authproxy.yaml").read_text())}
KUBERNETES_VERSION = "1.33.0"  # as .ci/run validates


def example(name: str) -> dict[str, Any]:
    return load_resource(EXAMPLES[name].read_text())


def toml_of(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return tomllib.loads(objects[0]["data"]["authproxy.toml"])


def flat(value: Any, path: str = "") -> dict[str, Any]:
    """``value`` as {path: leaf}, for diffing two renders."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}").items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{path}[{i}]").items()}
    return {path: value}


class RenderTests(SynchronousTestCase):
    def test_deployment_objects_validate(self) -> None:
        for name in EXAMPLES:
            with self.subTest(name):
                objects = render(example(name))
                self.assertEqual(
                    [o["kind"] for o in objects],
                    [
                        "ConfigMap",
                        "Deployment",
                        "Service",
                        "PodDisruptionBudget",
                        "NetworkPolicy",
                    ],
                )
                for obj in objects:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                validate_config(toml_of(objects))

    def test_pod_matches_the_shipped_manifest(self) -> None:
        shipped_pod = SHIPPED["Deployment"]["spec"]["template"]["spec"]
        shipped = shipped_pod["containers"][0]
        pod = render(example("oidc"))[1]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        for field in (
            "args",
            "ports",
            "resources",
            "startupProbe",
            "livenessProbe",
            "readinessProbe",
            "lifecycle",
        ):
            self.assertEqual(container[field], shipped[field], field)
        self.assertEqual(
            {
                k: v
                for k, v in container["securityContext"].items()
                if k not in ("runAsUser", "runAsGroup")
            },
            shipped["securityContext"],
        )
        for field in (
            "automountServiceAccountToken",
            "terminationGracePeriodSeconds",
            "securityContext",
        ):
            self.assertEqual(pod[field], shipped_pod[field], field)

    def test_grace_period_covers_pre_stop_shutdown_grace_and_margin(self) -> None:
        for name in EXAMPLES:
            for patch in (False, True):
                with self.subTest(name, patch=patch):
                    resource = example(name)
                    resource["spec"]["backend"]["url"] = "http://127.0.0.1:9000"
                    objects = render(resource, patch=patch)
                    written = toml_of(objects)["server"]["shutdown_grace"]
                    grace = validate_config(toml_of(objects)).server.shutdown_grace
                    self.assertEqual((written, grace), ("25s", 25.0))
                    pod = objects[1]["spec"]["template"]["spec"]
                    self.assertGreaterEqual(shutdown_slack(pod, grace), 0)

    def test_disruption_budget_and_network_policy(self) -> None:
        objects = {o["kind"]: o for o in render(example("oidc"))}
        pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
        budget, policy = objects["PodDisruptionBudget"], objects["NetworkPolicy"]
        # One replica (memory storage): a drain may evict it.
        self.assertEqual(budget["spec"]["maxUnavailable"], 1)
        self.assertEqual(budget["spec"]["selector"]["matchLabels"], pod_labels)
        self.assertEqual(policy["spec"]["podSelector"]["matchLabels"], pod_labels)
        self.assertEqual(
            policy["spec"]["ingress"], [{"ports": [{"protocol": "TCP", "port": 8080}]}]
        )
        dns, out = policy["spec"]["egress"]
        self.assertEqual({p["port"] for p in dns["ports"]}, {53})
        # The IdP over https and the MCP server's Service (http://weather-mcp:9000).
        self.assertEqual([p["port"] for p in out["ports"]], [443, 9000])
        self.assertNotIn("to", out)

    def test_redis_budget_keeps_one_serving_and_policy_lets_redis_out(self) -> None:
        resource = example("github")
        resource["spec"]["storage"]["redis"]["addr"] = "redis.cache:6380"
        objects = {o["kind"]: o for o in render(resource)}
        self.assertEqual(
            objects["PodDisruptionBudget"]["spec"],
            {
                "minAvailable": 1,
                "selector": objects["Deployment"]["spec"]["selector"],
            },
        )
        ports = [p["port"] for p in objects["NetworkPolicy"]["spec"]["egress"][1]["ports"]]
        # GitHub's endpoints, Redis; the backend is on loopback (no rule needed).
        self.assertEqual(ports, [443, 6380])

    def test_secrets_are_projected_in_list_order_with_mode_0400(self) -> None:
        resource = example("github")
        resource["spec"]["signingKeySecretRefs"] = [
            {"name": "new", "key": "k.pem"},
            {"name": "old", "key": "k.pem"},
        ]
        resource["spec"]["hmacSecretRefs"] = [{"name": "h", "key": "b"}, {"name": "h", "key": "a"}]
        volumes = pod_volumes(render(resource))
        secrets = {
            "new": {"k.pem": b"NEW"},
            "old": {"k.pem": b"OLD"},
            "h": {"a": b"A", "b": b"B"},
            "repo-tools-github": {"client-secret": b"S"},
            "repo-tools-redis": {"password": b"P"},
        }
        self.assertEqual(
            projected_files(volumes["authproxy-keys"], secrets),
            {"key-0.pem": b"NEW", "key-1.pem": b"OLD"},
        )
        self.assertEqual(
            projected_files(volumes["authproxy-hmac"], secrets), {"hmac-0": b"B", "hmac-1": b"A"}
        )
        self.assertEqual(
            projected_files(volumes["authproxy-upstream"], secrets), {"client-secret": b"S"}
        )
        self.assertEqual(projected_files(volumes["authproxy-redis"], secrets), {"password": b"P"})
        modes = {v["projected"]["defaultMode"] for v in volumes.values() if "projected" in v} | {
            item["mode"]
            for v in volumes.values()
            if "projected" in v
            for source in v["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        self.assertEqual(modes, {0o400})

    def test_configuration_names_the_mounts(self) -> None:
        objects = render(example("github"))
        config = toml_of(objects)
        self.assertEqual(
            (config["auth_server"]["signing_keys_dir"], config["auth_server"]["hmac_secrets_dir"]),
            (KEYS_DIR, HMAC_DIR),
        )
        self.assertEqual(config["upstream"]["client_secret_file"], f"{UPSTREAM_DIR}/client-secret")
        self.assertEqual(
            config["storage"],
            {
                "type": "redis",
                "url": "redis://redis:6379/0",
                "password_file": f"{REDIS_DIR}/password",
                "key_prefix": "repo-tools:",
            },
        )
        self.assertEqual(config["upstream"]["userinfo"]["subject_fields"], ["id"])
        self.assertEqual(
            config["upstream"]["userinfo"]["additional_headers"],
            {"Accept": "application/vnd.github+json"},
        )
        mounts = {
            m["mountPath"]
            for m in objects[1]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        }
        self.assertEqual(
            mounts, {"/etc/authproxy/config", KEYS_DIR, HMAC_DIR, UPSTREAM_DIR, REDIS_DIR}
        )
        self.assertEqual(objects[1]["spec"]["replicas"], 2)  # Redis: state shared by replicas

    def test_adding_a_key_changes_only_the_projected_items(self) -> None:
        resource = example("oidc")
        before = render(resource)
        rotated = copy.deepcopy(resource)
        rotated["spec"]["signingKeySecretRefs"].insert(
            0, {"name": "weather-keys", "key": "key-2026-12.pem"}
        )
        after = render(rotated)
        self.assertEqual(after[0], before[0])  # the ConfigMap: no restart for configuration
        old, new = flat(before), flat(after)
        changed = {path for path in old.keys() | new.keys() if old.get(path) != new.get(path)}
        self.assertTrue(changed)
        keys_index = [v["name"] for v in before[1]["spec"]["template"]["spec"]["volumes"]].index(
            "authproxy-keys"
        )
        sources = f"[1].spec.template.spec.volumes[{keys_index}].projected.sources["
        self.assertEqual({p for p in changed if not p.startswith(sources)}, set())

    def test_patch_adds_authproxy_to_the_mcp_server_deployment(self) -> None:
        objects = render(example("github"))
        configmap, patch = render(example("github"), patch=True)
        self.assertEqual(configmap, objects[0])
        self.assertEqual(patch["metadata"]["name"], "repo-tools")
        mcp_server = copy.deepcopy(SHIPPED["Deployment"])
        mcp_server["metadata"]["name"] = "repo-tools"
        pod = mcp_server["spec"]["template"]["spec"]
        pod["containers"] = [c for c in pod["containers"] if c["name"] == "mcp-server"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] == "tmp"]
        merged = strategic_merge(mcp_server, patch)
        kubernetes_validate.validate(merged, KUBERNETES_VERSION, strict=True)
        merged_pod = merged["spec"]["template"]["spec"]
        self.assertEqual([c["name"] for c in merged_pod["containers"]], ["mcp-server", "authproxy"])
        self.assertEqual(merged_pod["securityContext"]["fsGroup"], 10001)
        self.assertEqual(
            [v["name"] for v in merged_pod["volumes"]],
            [
                "tmp",
                "authproxy-config",
                "authproxy-keys",
                "authproxy-hmac",
                "authproxy-upstream",
                "authproxy-redis",
            ],
        )

    def test_patch_needs_a_loopback_backend(self) -> None:
        with self.assertRaises(ResourceError) as caught:
            render(example("oidc"), patch=True)
        self.assertIn("spec.backend.url", caught.exception.problems[0])
        self.assertIn("loopback", caught.exception.problems[0])


class ResourceErrorTests(SynchronousTestCase):
    def test_not_an_embedded_auth_server(self) -> None:
        with self.assertRaises(ResourceError) as caught:
            load_resource("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\nspec: {}\n")
        self.assertIn(
            "expected authproxy.dev/v1alpha1 EmbeddedAuthServer", caught.exception.problems[0]
        )

    def test_every_missing_field_is_named(self) -> None:
        resource = example("oidc")
        spec = resource["spec"]
        del spec["issuer"], spec["backend"]
        spec["hmacSecretRefs"] = [{"name": "h"}]
        with self.assertRaises(ResourceError) as caught:
            render(resource)
        self.assertEqual(
            sorted(p.split(":")[0] for p in caught.exception.problems),
            ["spec.backend.url", "spec.hmacSecretRefs[0]", "spec.issuer"],
        )

    def test_authproxy_refuses_what_the_daemon_would(self) -> None:
        resource = example("oidc")
        resource["spec"]["tokenLifespans"]["accessTokenLifespan"] = "25h"
        with self.assertRaises(ResourceError) as caught:
            render(resource)
        self.assertEqual(
            caught.exception.problems,
            ["authproxy configuration: auth_server.access_token_lifespan: 25h is outside 1m..1d"],
        )


class TOMLTests(SynchronousTestCase):
    """Review 2 F4 (kube_probe.py): JSON strings are not TOML strings; an emoji in a
    keyPrefix (the CRD's ^\\S+$ allows it) rendered a ConfigMap the pods crash-looped on."""

    def test_strings_round_trip_through_tomllib(self) -> None:
        awkward = [
            "tools\U0001f511:",
            "gh\U0001f600",
            'x"\n[server]\nallowed_hosts = ["*"]\n#',
            "a\u2028b\x00c\x1f\x7fd\\e\tf",
            "caf\u00e9 \ud7ff \ue000 \uffff \U0010ffff",
        ]
        for text in awkward:
            config = {"storage": {"key_prefix": text, "list": [text], "sub": {text: text}}}
            self.assertEqual(tomllib.loads(to_toml(config)), config, repr(text))

    def test_emoji_key_prefix_renders_a_loadable_configuration(self) -> None:
        resource = example("github")
        resource["spec"]["storage"]["redis"]["keyPrefix"] = "tools\U0001f511:"
        self.assertEqual(toml_of(render(resource))["storage"]["key_prefix"], "tools\U0001f511:")

    def test_what_toml_cannot_hold_is_refused_at_render(self) -> None:
        with self.assertRaises(ValueError) as caught:
            to_toml({"upstream": {"client_id": "a\ud800b"}})
        self.assertIn("upstream.client_id", str(caught.exception))
        resource = example("github")
        resource["spec"]["upstreamProviders"][0]["oauth2Config"]["clientId"] = "a\ud800b"
        with self.assertRaises(ResourceError) as refused:
            render(resource)
        self.assertIn("surrogate", refused.exception.problems[0])


class CommandTests(SynchronousTestCase):
    def run_command(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["kube", "render", *argv])
        return status, out.getvalue(), err.getvalue()

    def test_stdout_is_one_yaml_stream(self) -> None:
        status, out, _ = self.run_command(str(EXAMPLES["oidc"]))
        self.assertEqual(status, 0)
        self.assertEqual(list(yaml.safe_load_all(out)), render(example("oidc")))

    def test_output_dir_for_patch(self) -> None:
        directory = Path(tempfile.mkdtemp())
        status, _, _ = self.run_command(
            "--patch", "--output-dir", str(directory), str(EXAMPLES["github"])
        )
        self.assertEqual(status, 0)
        self.assertEqual(sorted(os.listdir(directory)), ["configmap.yaml", "deployment-patch.yaml"])
        patch = yaml.safe_load((directory / "deployment-patch.yaml").read_text())
        self.assertEqual(patch, render(example("github"), patch=True)[1])

    def test_problems_go_to_stderr(self) -> None:
        path = Path(tempfile.mkdtemp()) / "bad.yaml"
        path.write_text(
            "apiVersion: authproxy.dev/v1alpha1\nkind: EmbeddedAuthServer\nmetadata: {}\n"
        )
        status, out, err = self.run_command(str(path))
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err.splitlines(), [f"{path}: metadata.name: is required", f"{path}: spec: is required"]
        )


class CheckRoundTripTests(SynchronousTestCase):
    def test_rendered_configuration_passes_check_on_kubelet_files(self) -> None:
        """The ConfigMap's TOML, with the Secrets written where the pod mounts them (the
        ``..data`` layout), passes ``authproxy check --root``."""
        for name in EXAMPLES:
            with self.subTest(name):
                objects = render(example(name))
                root = Path(tempfile.mkdtemp())
                secrets: dict[str, dict[str, bytes]] = {}
                resource = example(name)
                for ref in resource["spec"]["signingKeySecretRefs"]:
                    secrets.setdefault(ref["name"], {})[ref["key"]] = ec_pem()
                for ref in resource["spec"]["hmacSecretRefs"]:
                    secrets.setdefault(ref["name"], {})[ref["key"]] = hmac_secret()
                for volume in pod_volumes(objects).values():
                    if "projected" in volume:
                        for source in volume["projected"]["sources"]:
                            for item in source["secret"]["items"]:
                                secrets.setdefault(source["secret"]["name"], {}).setdefault(
                                    item["key"], b"s3cret"
                                )
                container = objects[1]["spec"]["template"]["spec"]["containers"][0]
                mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
                for volume_name, volume in pod_volumes(objects).items():
                    if "projected" in volume:
                        directory = KubeletDir(str(root / mounts[volume_name].lstrip("/")))
                        directory.publish(projected_files(volume, secrets))
                config = root / "authproxy.toml"
                config.write_text(objects[0]["data"]["authproxy.toml"])
                report = check_config(config, environ={}, root=str(root))
                self.assertEqual(report.problems, ())
