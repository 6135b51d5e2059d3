"""The EmbeddedAuthServer custom resource as the renderer reads it.

The API server has validated a stored resource against the CRD's schema and CEL rules;
a file given to ``authproxy kube render`` may not have been through it, so what the renderer
needs is checked here once more, each problem naming the field (``spec.issuer: ...``).
What authproxy itself checks (URLs, lifespan bounds) is left to its configuration loader,
which the renderer runs on the result.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import yaml

GROUP = "authproxy.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "EmbeddedAuthServer"


class ResourceError(Exception):
    """The resource cannot be rendered; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@attrs.frozen
class SecretKeyRef:
    """One key of one Secret (ToolHive's ``SecretKeyRef``)."""

    name: str
    key: str


def load_resource(text: str) -> dict[str, Any]:
    """The one EmbeddedAuthServer in a YAML document; ResourceError if it is anything else."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ResourceError([f"not valid YAML ({e})"]) from None
    if len(documents) != 1:
        raise ResourceError([f"expected one resource, found {len(documents)}"])
    resource = documents[0]
    if not isinstance(resource, Mapping):
        raise ResourceError(["(top level): must be a mapping"])
    problems = []
    if resource.get("apiVersion") != API_VERSION or resource.get("kind") != KIND:
        problems.append(
            f"apiVersion/kind: expected {API_VERSION} {KIND}, found "
            f"{resource.get('apiVersion')} {resource.get('kind')}"
        )
    name = _get(resource, "metadata", "name")
    if not isinstance(name, str) or not name:
        problems.append("metadata.name: is required")
    if not isinstance(resource.get("spec"), Mapping):
        problems.append("spec: is required")
    if problems:
        raise ResourceError(problems)
    return dict(resource)


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def secret_refs(spec: Mapping[str, Any], field: str, problems: list[str]) -> list[SecretKeyRef]:
    """``spec[field]``: a list of Secret references; each malformed one is a problem."""
    refs = spec.get(field)
    if not isinstance(refs, list) or not refs:
        problems.append(f"spec.{field}: needs at least one {{name, key}} reference")
        return []
    return [
        ref
        for i, value in enumerate(refs)
        if (ref := secret_ref(value, f"spec.{field}[{i}]", problems)) is not None
    ]


def secret_ref(value: Any, path: str, problems: list[str]) -> SecretKeyRef | None:
    """One ``{name, key}`` reference, or None with the problem added."""
    name, key = _get(value, "name"), _get(value, "key")
    if isinstance(name, str) and name and isinstance(key, str) and key:
        return SecretKeyRef(name, key)
    problems.append(f"{path}: must be {{name, key}}, both non-empty strings")
    return None
