"""Rendered Kubernetes objects as a test reads them: a projected volume's files, as kubelet
writes them, and a strategic-merge patch applied to a Deployment."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

#: Secrets as the tests keep them: name -> key -> bytes.
Secrets = Mapping[str, Mapping[str, bytes]]


def pod_volumes(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The pod's volumes by name (of the Deployment or the patch)."""
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    return {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}


def projected_files(volume: Mapping[str, Any], secrets: Secrets) -> dict[str, bytes]:
    """What kubelet writes into a projected Secret volume: each item's key at its path."""
    files = {}
    for source in volume["projected"]["sources"]:
        secret = source["secret"]
        for item in secret["items"]:
            files[item["path"]] = secrets[secret["name"]][item["key"]]
    return files


def strategic_merge(deployment: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` applied to ``deployment`` the way the API server merges the pod's lists
    (containers and volumes by name; maps recursively): enough for the renderer's patch."""

    def merge(base: Any, change: Any) -> Any:
        if isinstance(base, dict) and isinstance(change, Mapping):
            merged = dict(base)
            for key, value in change.items():
                merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
            return merged
        if isinstance(base, list) and isinstance(change, list) and all("name" in v for v in change):
            by_name = {v["name"]: v for v in change}
            kept = [merge(v, by_name.pop(v["name"])) if v["name"] in by_name else v for v in base]
            return kept + [copy.deepcopy(v) for v in change if v["name"] in by_name]
        return copy.deepcopy(change)

    return merge(deployment, patch)


def shutdown_slack(pod: Mapping[str, Any], shutdown_grace: float) -> float:
    """Seconds the pod's ``terminationGracePeriodSeconds`` leaves beyond authproxy's own
    shutdown: its container's preStop sleep, ``shutdown_grace`` and the margin the renderer
    and the shipped manifests allow. Negative: kubelet's SIGKILL cuts the streams."""
    from authproxy.kube.render import SHUTDOWN_MARGIN_SECONDS

    authproxy = next(c for c in pod["containers"] if c["name"] == "authproxy")
    pre_stop = authproxy["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + shutdown_grace + SHUTDOWN_MARGIN_SECONDS
    return float(pod["terminationGracePeriodSeconds"] - needed)
