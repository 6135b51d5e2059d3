"""``authproxy kube render``: an EmbeddedAuthServer resource -> the Kubernetes objects that run it.

``render`` is a pure function of the resource: the ConfigMap holding authproxy.toml, then
either a Deployment, a Service, a PodDisruptionBudget and a NetworkPolicy for authproxy on
its own, or (``patch=True``) a strategic-merge patch that adds the authproxy container and
its volumes to the existing MCP server Deployment, whose MCP server is then authproxy's
backend on loopback.

The patch comes without a budget or a policy, on purpose: the pod is the MCP server's, and
so are they. A second PodDisruptionBudget over the same pod makes every eviction of it fail
(the eviction API refuses a pod with more than one budget, so node drains hang), and a
NetworkPolicy of authproxy's selecting that pod with ``policyTypes: [Egress]`` would cut
whatever the MCP server itself reaches out to. README, "Kubernetes resource", says what to
add to the MCP server's own policy instead.

Secrets arrive as projected volumes whose items name each referenced key ``key-0.pem``,
``key-1.pem``, ... and ``hmac-0``, ... in list order (index 0 active) with mode 0400. The
TOML names the directories only, so editing a list changes the pod template's projected
items and nothing else, which still rolls the Deployment's pods (a pod's volumes are fixed
for its life); rotating through the Secrets' contents under the referenced key names does
not (README, "Kubernetes resource": rotate). The pod matches the shipped manifests
(etc/kubernetes/authproxy.yaml): probes, securityContext, resources, preStop and grace.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

import authproxy
from authproxy.http.loopback import is_loopback_host
from authproxy.kube import configuration as c
from authproxy.kube.resource import (
    ResourceError,
    SecretKeyRef,
    load_resource,
    secret_ref,
    secret_refs,
)

DEFAULT_IMAGE = f"registry.example.com/authproxy:{authproxy.__version__}"
#: 0400 (owner read); kubelet adds group read for the pod's fsGroup, which authproxy accepts.
SECRET_MODE = 0o400
#: authproxy's user and group in the image; fsGroup makes the Secrets readable to it.
USER_ID = 10001
CONFIG_CHECKSUM = "authproxy.dev/config-sha256"

_RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def render(
    resource: Mapping[str, Any],
    *,
    patch: bool = False,
    image: str = DEFAULT_IMAGE,
    target: str | None = None,
) -> list[dict[str, Any]]:
    """The objects that run ``resource``; ResourceError with every problem.

    ``patch``: the ConfigMap and a patch for the MCP server Deployment ``target`` (default:
    the resource's name) instead of a Deployment and Service of authproxy's own.
    """
    name: str = resource["metadata"]["name"]
    spec = resource["spec"]
    config = c.authproxy_config(spec)
    try:
        toml = c.to_toml(config)
    except ValueError as e:
        raise ResourceError([f"authproxy configuration: {e}"]) from None
    labels = {"app.kubernetes.io/name": "authproxy", "app.kubernetes.io/instance": name}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-authproxy", "labels": labels},
        "data": {c.CONFIG_FILE: toml},
    }
    volumes = _volumes(spec, f"{name}-authproxy")
    container = _container(image, volumes)
    # authproxy reads its configuration once: a changed ConfigMap must roll the pods.
    annotations = {CONFIG_CHECKSUM: hashlib.sha256(toml.encode()).hexdigest()}
    if patch:
        backend = config["backend"]["url"]
        host = urlsplit(backend).hostname
        if not is_loopback_host(host):
            raise ResourceError(
                [
                    f'spec.backend.url: "{backend}" must be on loopback with --patch '
                    "(the MCP server container of the same pod, e.g. http://127.0.0.1:9000)"
                ]
            )
        return [configmap, _patch(target or name, container, volumes, annotations)]
    replicas = 2 if config.get("storage", {}).get("type") == "redis" else 1
    own = f"{name}-authproxy"
    return [
        configmap,
        _deployment(own, labels, replicas, container, volumes, annotations),
        _service(own, labels),
        _disruption_budget(own, labels, replicas),
        _network_policy(own, labels, config),
    ]


def _projected(name: str, refs: Sequence[SecretKeyRef], paths: Sequence[str]) -> dict[str, Any]:
    """A projected volume: ``refs[i]`` as the file ``paths[i]``, mode 0400."""
    return {
        "name": name,
        "projected": {
            "defaultMode": SECRET_MODE,
            "sources": [
                {
                    "secret": {
                        "name": ref.name,
                        "items": [{"key": ref.key, "path": path, "mode": SECRET_MODE}],
                    }
                }
                for ref, path in zip(refs, paths, strict=True)
            ],
        },
    }


def _volumes(spec: Mapping[str, Any], configmap: str) -> list[tuple[dict[str, Any], str]]:
    """The pod's volumes of authproxy, each with where the container mounts it."""
    problems: list[str] = []
    keys = secret_refs(spec, "signingKeySecretRefs", problems)
    hmac = secret_refs(spec, "hmacSecretRefs", problems)
    volumes = [
        ({"name": "authproxy-config", "configMap": {"name": configmap}}, c.CONFIG_DIR),
        (
            _projected("authproxy-keys", keys, [f"key-{i}.pem" for i in range(len(keys))]),
            c.KEYS_DIR,
        ),
        (_projected("authproxy-hmac", hmac, [f"hmac-{i}" for i in range(len(hmac))]), c.HMAC_DIR),
    ]
    provider = spec["upstreamProviders"][0]
    details = provider.get("oidcConfig") or provider.get("oauth2Config") or {}
    # authproxy_config has checked these references: here they are only read.
    if (ref := secret_ref(details.get("clientSecretRef"), "", problems)) is not None:
        volumes.append(
            (_projected("authproxy-upstream", [ref], [c.CLIENT_SECRET_FILE]), c.UPSTREAM_DIR)
        )
    redis = (spec.get("storage") or {}).get("redis") or {}
    password = (redis.get("aclUserConfig") or {}).get("passwordSecretRef")
    if (ref := secret_ref(password, "", problems)) is not None:
        volumes.append((_projected("authproxy-redis", [ref], [c.REDIS_PASSWORD_FILE]), c.REDIS_DIR))
    return volumes


def _container(image: str, volumes: Sequence[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    """authproxy's container, as in etc/kubernetes/authproxy.yaml."""
    return {
        "name": "authproxy",
        "image": image,
        "args": [
            "twistd",
            "-n",
            "--pidfile=",
            "--logger",
            "authproxy.ops.logs.observer",
            "authproxy",
            "--config",
            f"{c.CONFIG_DIR}/{c.CONFIG_FILE}",
        ],  # fmt: skip
        "ports": [{"name": "http", "containerPort": c.PORT}],
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "512Mi"},
        },
        # Keys loaded and the Site listening: up to 60 s.
        "startupProbe": _probe("/health", periodSeconds=2, failureThreshold=30),
        # Never /ready: an IdP outage must not restart authproxy.
        "livenessProbe": _probe("/health", periodSeconds=10, timeoutSeconds=3, failureThreshold=3),
        "readinessProbe": _probe("/ready", periodSeconds=5, timeoutSeconds=3, failureThreshold=2),
        # Endpoints drop the pod before SIGTERM: no new requests arrive during shutdown_grace.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        # Its own user, so the patch needs nothing of the MCP server's pod but fsGroup.
        "securityContext": {**_RESTRICTED, "runAsUser": USER_ID, "runAsGroup": USER_ID},
        "volumeMounts": [
            {"name": volume["name"], "mountPath": path, "readOnly": True}
            for volume, path in volumes
        ],
    }


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **timing}


def _pod_security() -> dict[str, Any]:
    # fsGroup: Secrets arrive group-readable (0440) for authproxy's own group.
    return {
        "runAsNonRoot": True,
        "runAsUser": USER_ID,
        "runAsGroup": USER_ID,
        "fsGroup": USER_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


#: The preStop sleep: endpoints drop the pod before SIGTERM reaches authproxy.
PRE_STOP_SECONDS = 5
#: After shutdown_grace: the other services stop and the process exits (a supervised
#: backend gets SIGKILL 5 s after SIGTERM at most: ProcessMonitor's killTime).
SHUTDOWN_MARGIN_SECONDS = 5
#: 5 + 25 + 5 = 35, as in the shipped manifests and README ("Shutdown and signals").
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + c.SHUTDOWN_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS


def _deployment(
    name: str,
    labels: dict[str, str],
    replicas: int,
    container: dict[str, Any],
    volumes: Sequence[tuple[dict[str, Any], str]],
    annotations: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            # memory storage: one replica (each would have its own users and tokens)
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "automountServiceAccountToken": False,
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": _pod_security(),
                    "containers": [container],
                    "volumes": [volume for volume, _ in volumes],
                },
            },
        },
    }


def _service(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }


def _disruption_budget(name: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    """As in the shipped manifests: with one replica a drain may evict it (or the drain
    would hang); with two, one keeps serving."""
    budget: dict[str, Any] = {"minAvailable": 1} if replicas > 1 else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {**budget, "selector": {"matchLabels": labels}},
    }


_DEFAULT_PORTS = {"https": 443, "http": 80, "redis": 6379, "rediss": 6379}


def _egress_ports(config: Mapping[str, Mapping[str, Any]]) -> list[int]:
    """The TCP ports authproxy connects to: the IdP's URLs, the backend, Redis."""
    upstream = config["upstream"]
    urls = [
        upstream.get(field)
        for field in (
            "issuer_url",
            "authorization_endpoint",
            "token_endpoint",
            "revocation_endpoint",
        )
    ]
    urls += [
        upstream.get("userinfo", {}).get("endpoint_url"),
        config["backend"]["url"],
        config.get("storage", {}).get("url"),
    ]
    ports = set()
    for url in filter(None, urls):
        parts = urlsplit(url)
        if not is_loopback_host(parts.hostname):
            ports.add(parts.port or _DEFAULT_PORTS.get(parts.scheme, 443))
    return sorted(ports)


def _network_policy(
    name: str, labels: dict[str, str], config: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """In: authproxy's port. Out: DNS, and the ports of what the configuration names, to
    any address (the renderer cannot know where the IdP, the backend and Redis live;
    narrow ``to`` by hand where they are fixed)."""
    dns = [{"protocol": protocol, "port": 53} for protocol in ("UDP", "TCP")]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "podSelector": {"matchLabels": labels},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": c.PORT}]}],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
                        }
                    ],
                    "ports": dns,
                },
                {"ports": [{"protocol": "TCP", "port": p} for p in _egress_ports(config)]},
            ],
        },
    }


def _patch(
    target: str,
    container: dict[str, Any],
    volumes: Sequence[tuple[dict[str, Any], str]],
    annotations: dict[str, str],
) -> dict[str, Any]:
    """A strategic-merge patch for the MCP server Deployment ``target``: containers and
    volumes merge by name, so the MCP server's own stay as they are."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "securityContext": {"fsGroup": USER_ID},
                    "containers": [container],
                    "volumes": [volume for volume, _ in volumes],
                },
            }
        },
    }


class _ManifestDumper(yaml.SafeDumper):
    """YAML as people write manifests: no anchors, authproxy.toml as a literal block."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _string)


def to_yaml(objects: Sequence[Mapping[str, Any]]) -> str:
    """The objects as one YAML stream (``kubectl apply -f -``)."""
    return yaml.dump_all(objects, Dumper=_ManifestDumper, sort_keys=False)


def file_names(objects: Sequence[Mapping[str, Any]], patch: bool) -> list[str]:
    """What ``--output-dir`` names each object's file: ``configmap.yaml``, ``deployment.yaml``
    (``deployment-patch.yaml`` for the patch), ``service.yaml``, ``poddisruptionbudget.yaml``,
    ``networkpolicy.yaml``."""
    names = []
    for obj in objects:
        kind = str(obj["kind"]).lower()
        names.append(f"{kind}-patch.yaml" if patch and kind == "deployment" else f"{kind}.yaml")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``authproxy kube render``'s arguments."""
    parser.add_argument("file", metavar="FILE", help="an EmbeddedAuthServer resource (YAML)")
    parser.add_argument(
        "--patch",
        action="store_true",
        help="a strategic-merge patch adding authproxy to the MCP server Deployment "
        "(named by --target) instead of a Deployment of its own",
    )
    parser.add_argument(
        "--target", metavar="NAME", help="the MCP server Deployment (default: the resource's name)"
    )
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="authproxy's container image")
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write one file per object into DIR (configmap.yaml, ...) instead of stdout",
    )


def run(args: argparse.Namespace) -> int:
    """Render ``args.file``; the exit status (1 with one line per problem on stderr)."""
    try:
        resource = load_resource(Path(args.file).read_text())
        objects = render(resource, patch=args.patch, image=args.image, target=args.target)
    except OSError as e:
        sys.stderr.write(f"{args.file}: cannot read ({e.strerror or e.__class__.__name__})\n")
        return 1
    except ResourceError as e:
        sys.stderr.writelines(f"{args.file}: {problem}\n" for problem in e.problems)
        return 1
    if args.output_dir is None:
        sys.stdout.write(to_yaml(objects))
        return 0
    directory = Path(args.output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for obj, name in zip(objects, file_names(objects, args.patch), strict=True):
        (directory / name).write_text(to_yaml([obj]))
        sys.stdout.write(f"{directory / name}\n")
    return 0
