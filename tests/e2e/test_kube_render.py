"""An EmbeddedAuthServer resource, rendered, runs: authproxy under twistd on the rendered
configuration and on Secret files laid out the way kubelet writes them; a key added to the
resource's list reaches the running daemon by the ``..data`` swap, without a restart.

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
            "signingKeySecretRefs": [{"name": "e2e-keys", "key": "first.pem"}],
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


def test_rendered_resource_runs_and_rotates_a_key(tmp_path: Path) -> None:
    procs.ensure_oidc_fixture()
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    idp = procs.start_oidc_provider([harness.idp_client(url)], log_dir=tmp_path)
    backend = procs.start_mcp_server(log_dir=tmp_path)
    proxy = None
    try:
        eas = resource(url, idp.issuer, backend.base_url)
        secrets = {
            "e2e-keys": {"first.pem": ec_pem()},
            "e2e-hmac": {"current": hmac_secret()},
            "e2e-upstream": {"client-secret": harness.IDP_CLIENT_SECRET.encode()},
        }
        # --patch: authproxy beside the MCP server, its backend on loopback.
        configmap, patch = render(eas, patch=True)
        pod_root = tmp_path / "pod"
        container = patch["spec"]["template"]["spec"]["containers"][0]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        directories = {}
        for name, volume in pod_volumes([patch]).items():
            if "projected" in volume:
                directories[name] = KubeletDir(str(pod_root / mounts[name].lstrip("/")))
                directories[name].publish(projected_files(volume, secrets))

        config = dict(under_root(tomllib.loads(configmap["data"]["authproxy.toml"]), str(pod_root)))
        config["server"] = dict(config["server"], listen=[f"tcp:{port}:interface=127.0.0.1"])
        proxy = harness.Authproxy(
            harness.write_config(tmp_path / "authproxy.toml", config), port, tmp_path
        )
        proxy.start()  # returns once /ready answers 200
        assert httpx2.get(url + "/ready").status_code == 200
        first = thumbprint(secrets["e2e-keys"]["first.pem"])
        assert kids(url) == [first]
        pid = proxy.process.pid if proxy.process else None

        # Rotate: the new key first in the resource's list, re-render, and let "kubelet"
        # publish the new projection.
        secrets["e2e-keys"]["second.pem"] = ec_pem()
        eas["spec"]["signingKeySecretRefs"].insert(0, {"name": "e2e-keys", "key": "second.pem"})
        configmap_after, patch_after = render(eas, patch=True)
        assert configmap_after == configmap
        keys = pod_volumes([patch_after])["authproxy-keys"]
        directories["authproxy-keys"].publish(projected_files(keys, secrets))

        second = thumbprint(secrets["e2e-keys"]["second.pem"])
        deadline = time.monotonic() + 30
        while kids(url) != [second, first]:
            assert time.monotonic() < deadline, f"JWKS still {kids(url)}"
            time.sleep(0.2)
        assert proxy.process is not None and proxy.process.running and proxy.process.pid == pid
    finally:
        if proxy is not None:
            proxy.stop()
        backend.stop()
        idp.stop()
