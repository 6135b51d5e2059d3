"""An EmbeddedAuthServer resource, rendered, runs: authproxy under twistd on the rendered
configuration and on Secret files laid out the way kubelet writes them. Keys rotate the two
ways README ("Kubernetes resource") describes: through the Secret's contents under the key
names the resource references (the rendered objects stay the same; kubelet's ``..data``
swap reaches the running daemon, no restart), and by editing the resource's list (the pod
template changes, so the Deployment rolls: a new pod starts on the new projection).

The pod's view of the filesystem is a directory standing for ``/`` (as ``authproxy check
--root`` reads it); the rendered TOML is used as is, except that its file paths are moved
under that directory (``config.under_root``) and it listens on a free loopback port instead
of the pod's 8080.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

import httpx2
import pytest
from jwcrypto import jwk

from authproxy.config import under_root
from authproxy.kube.render import render
from authproxy.testing import KubeletDir, ec_pem, hmac_secret
from tests import processes as procs
from tests.e2e import harness
from tests.kube_objects import pod_volumes, projected_files

pytestmark = pytest.mark.e2e


def thumbprint(pem: bytes) -> str:
    return str(jwk.JWK.from_pem(pem).thumbprint())


def resource(issuer: str, idp: str, backend: str) -> dict[str, Any]:
    return {
        "apiVersion": "authproxy.dev/v1alpha1",
        "kind": "EmbeddedAuthServer",
        "metadata": {"name": "e2e"},
        "spec": {
            "issuer": issuer,
            # Two slots, rotated through the Secret's contents (README).
            "signingKeySecretRefs": [
                {"name": "e2e-keys", "key": "key-0.pem"},
                {"name": "e2e-keys", "key": "key-1.pem"},
            ],
            "hmacSecretRefs": [{"name": "e2e-hmac", "key": "current"}],
            "upstreamProviders": [
                {
                    "name": "e2e-idp",
                    "type": "oidc",
                    "oidcConfig": {
                        "issuerUrl": idp,
                        "clientId": "authproxy",
                        "clientSecretRef": {"name": "e2e-upstream", "key": "client-secret"},
                    },
                }
            ],
            "backend": {"url": backend},
        },
    }


def kids(url: str) -> list[str]:
    return [key["kid"] for key in httpx2.get(url + "/.well-known/jwks.json").json()["keys"]]


class Pod:
    """authproxy as the rendered patch runs it: its projected Secret volumes under
    ``root`` (kubelet-style directories), the rendered TOML moved under ``root``."""

    def __init__(self, configmap: dict[str, Any], patch: dict[str, Any], root: Path) -> None:
        self.root = root
        self.toml = configmap["data"]["authproxy.toml"]
        container = patch["spec"]["template"]["spec"]["containers"][0]
        self.mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        self.volumes = {n: v for n, v in pod_volumes([patch]).items() if "projected" in v}
        self.directories = {
            name: KubeletDir(str(root / self.mounts[name].lstrip("/"))) for name in self.volumes
        }
        self.proxy: harness.Authproxy | None = None

    def publish(self, secrets: dict[str, dict[str, bytes]]) -> None:
        """What kubelet does when a referenced Secret changes: a new ``..data``."""
        for name, volume in self.volumes.items():
            self.directories[name].publish(projected_files(volume, secrets))

    def start(self, port: int) -> str:
        config = dict(under_root(tomllib.loads(self.toml), str(self.root)))
        config["server"] = dict(config["server"], listen=[f"tcp:{port}:interface=127.0.0.1"])
        path = harness.write_config(self.root / "authproxy.toml", config)
        self.proxy = harness.Authproxy(path, port, self.root)
        self.proxy.start()  # returns once /ready answers 200
        return self.proxy.url

    @property
    def pid(self) -> int | None:
        assert self.proxy is not None and self.proxy.process is not None
        assert self.proxy.process.running
        return self.proxy.process.pid

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()


def wait_for_kids(url: str, expected: list[str]) -> None:
    deadline = time.monotonic() + 30
    while kids(url) != expected:
        assert time.monotonic() < deadline, f"JWKS still {kids(url)}"
        time.sleep(0.2)


def test_rendered_resource_runs_and_rotates_a_key(tmp_path: Path) -> None:
    procs.ensure_oidc_fixture()
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    idp = procs.start_oidc_provider([harness.idp_client(url)], log_dir=tmp_path)
    backend = procs.start_mcp_server(log_dir=tmp_path)
    pods: list[Pod] = []
    try:
        eas = resource(url, idp.issuer, backend.base_url)
        a, b, c, d = (ec_pem() for _ in range(4))
        secrets = {
            "e2e-keys": {"key-0.pem": a, "key-1.pem": b},
            "e2e-hmac": {"current": hmac_secret()},
            "e2e-upstream": {"client-secret": harness.IDP_CLIENT_SECRET.encode()},
        }
        # --patch: authproxy beside the MCP server, its backend on loopback.
        configmap, patch = render(eas, patch=True)
        pod = Pod(configmap, patch, tmp_path / "pod")
        pods.append(pod)
        pod.publish(secrets)
        assert httpx2.get(pod.start(port) + "/ready").status_code == 200
        assert kids(url) == [thumbprint(a), thumbprint(b)]
        pid = pod.pid

        # Through the Secret: the resource and so the rendered objects stay as they are;
        # kubelet swaps ..data and the running daemon reloads. New key verify-only first...
        secrets["e2e-keys"] = {"key-0.pem": a, "key-1.pem": c}
        assert render(eas, patch=True) == [configmap, patch]
        pod.publish(secrets)
        wait_for_kids(url, [thumbprint(a), thumbprint(c)])
        # ... then promoted.
        secrets["e2e-keys"] = {"key-0.pem": c, "key-1.pem": a}
        pod.publish(secrets)
        wait_for_kids(url, [thumbprint(c), thumbprint(a)])
        assert pod.pid == pid

        # By the list: the ConfigMap stays, the pod template changes, so the Deployment
        # rolls; its new pod (maxSurge 1) starts on the new projection.
        secrets["e2e-keys"]["key-2026-12.pem"] = d
        eas["spec"]["signingKeySecretRefs"].insert(
            0, {"name": "e2e-keys", "key": "key-2026-12.pem"}
        )
        configmap_after, patch_after = render(eas, patch=True)
        assert configmap_after == configmap
        assert patch_after["spec"]["template"] != patch["spec"]["template"]
        new_pod = Pod(configmap_after, patch_after, tmp_path / "new-pod")
        pods.append(new_pod)
        new_pod.publish(secrets)
        new_url = new_pod.start(procs.free_port())
        assert kids(new_url) == [thumbprint(d), thumbprint(c), thumbprint(a)]
        pod.stop()  # the old pod goes once the new one is ready
        assert httpx2.get(new_url + "/ready").status_code == 200
    finally:
        for running in pods:
            running.stop()
        backend.stop()
        idp.stop()
