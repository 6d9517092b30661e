"""A small kustomize, so that deploy/k8s is checked where `kubectl` is not installed.

kubectl cannot be installed from the project's own files (Debian's kubernetes-client carries a
kustomize too old for components), so the tests render the overlays themselves and, where
kubectl is present, check that it renders exactly the same (test_kubernetes.py).

Only what deploy/k8s uses is supported: `resources` (files and folders), `components`,
`namespace`, `images`, `replicas` and JSON 6902 `patches` targeted by kind, name and label
selector, applied in kustomize's order (patches, namespace, replicas, images). Anything else is
refused by name rather than rendered wrongly: extend this module, or the test says why.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_FIELDS = {
    *("apiVersion", "kind", "resources", "components"),
    *("namespace", "images", "replicas", "patches"),
}
_CLUSTER_SCOPED = {
    *("Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume"),
    *("StorageClass", "PriorityClass", "CustomResourceDefinition"),
}
_SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet"}


class UnsupportedError(Exception):
    """deploy/k8s uses a kustomize feature this renderer does not have."""


def render(root: Path) -> list[Resource]:
    """The resources `kubectl kustomize root` prints, in no particular order."""
    return _build(root, [])


def _build(root: Path, inherited: list[Resource]) -> list[Resource]:
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unknown = set(spec) - _FIELDS
    if unknown:
        raise UnsupportedError(f"{root}: kustomization fields {sorted(unknown)}")
    resources = list(inherited)
    for entry in spec.get("resources", []):
        path = root / entry
        if path.is_dir():
            resources += _build(path, [])
        else:
            resources += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for entry in spec.get("components", []):
        resources = _build(root / entry, resources)
    for patch in spec.get("patches", []):
        _patch(root, patch, resources)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in _CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = spec["namespace"]
    for replicas in spec.get("replicas", []):
        for resource in resources:
            if resource["kind"] in _SCALABLE and _name(resource) == replicas["name"]:
                resource["spec"]["replicas"] = replicas["count"]
    for image in spec.get("images", []):
        for resource in resources:
            for container in _containers(resource):
                container["image"] = _retag(container["image"], image)
    return resources


def _name(resource: Resource) -> str:
    name: str = resource["metadata"]["name"]
    return name


def _patch(root: Path, entry: dict[str, Any], resources: list[Resource]) -> None:
    if set(entry) - {"path", "patch", "target"} or "target" not in entry:
        raise UnsupportedError(f"{root}: patch {entry}: only path/patch with a target")
    text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise UnsupportedError(f"{root}: {entry}: strategic merge; write a JSON 6902 patch")
    matched = [r for r in resources if _matches(r, entry["target"])]
    if not matched:
        raise ValueError(f"{root}: patch target {entry['target']} matches no resource")
    for resource in matched:
        for operation in operations:
            _apply(resource, operation)


def _matches(resource: Resource, target: dict[str, str]) -> bool:
    if set(target) - {"kind", "name", "labelSelector"}:
        raise UnsupportedError(f"patch target {target}")
    if "kind" in target and resource["kind"] != target["kind"]:
        return False
    if "name" in target and _name(resource) != target["name"]:
        return False
    labels = resource["metadata"].get("labels", {})
    for term in filter(None, target.get("labelSelector", "").split(",")):
        key, _, value = term.partition("=")
        if labels.get(key.strip()) != value.strip():
            return False
    return True


def _apply(document: Resource, operation: dict[str, Any]) -> None:
    op = operation["op"]
    if op not in {"add", "replace", "remove"}:
        raise UnsupportedError(f"JSON patch operation {op!r}")
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    value = copy.deepcopy(operation.get("value"))
    if isinstance(node, list):
        if op == "add":
            node.insert(len(node) if last == "-" else int(last), value)
        elif op == "replace":
            node[int(last)] = value
        else:
            del node[int(last)]
        return
    if op != "add" and last not in node:
        raise ValueError(f"{operation['path']} does not exist; {op} needs it")
    if op == "remove":
        del node[last]
    else:
        node[last] = value


def _containers(resource: Resource) -> list[dict[str, Any]]:
    spec = resource.get("spec", {})
    pod = spec.get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _retag(reference: str, image: dict[str, str]) -> str:
    if "@" in reference:
        raise UnsupportedError(f"image digests ({reference})")
    name, tag = reference, ""
    if ":" in reference.rsplit("/", 1)[-1]:
        name, tag = reference.rsplit(":", 1)
    if name != image["name"]:
        return reference
    name = image.get("newName", name)
    tag = image.get("newTag", tag)
    return f"{name}:{tag}" if tag else name
