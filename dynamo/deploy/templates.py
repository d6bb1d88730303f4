"""Telling a template or a fragment from a deployable DGD, on the raw parsed document
(either served version, so findings carry that version's own paths).

Upstream recipes ship templates (`image: <your-registry>/...`, `${VERSION}`,
`REPLACE-CONTAINER-IMAGE`) and kustomize patches next to real manifests. A template is a
valid DGD in shape, so its placeholders are warnings: a pipeline (envsubst, kustomize) may
fill them in, but applied as-is the cluster pulls an image that does not exist or refuses
the resource. A patch is never a whole DGD; `patch_hint` explains the errors it causes.
"""

from __future__ import annotations

import re
from typing import Any

from dynamo.deploy.schema_walk import join_path

# `<your-namespace>`, `${VERSION}` and the REPLACE-ME convention; `$(VAR)` is Kubernetes'
# own env substitution in command/args and never appears in the fields checked here.
PLACEHOLDER = re.compile(r"<[^<>]+>|\$\{[^}]*\}|REPLACE")

# A Kubernetes resource.Quantity: a signed decimal number with an optional binary-SI,
# decimal-SI or exponent suffix (k8s.io/apimachinery/pkg/api/resource).
QUANTITY = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?")

PATCH_HINT = ("this looks like a kustomize patch (strategic-merge `$patch` keys, or components with only a "
              "name), not a whole DynamoGraphDeployment; run `kustomize build` first and validate its output")

_NAMESPACE_KEYS = ("namespace", "dynamoNamespace")
_NOT_QUANTITIES = ("gpuType",)  # v1alpha1 Quantities: a node label value, not an amount
_CLAIM_KEYS = ("claimName", "pvcName", "secretName", "envFromSecret")


def findings(raw: Any) -> list[str]:
    """Placeholders in images, namespaces and resources, and unparsable quantities."""
    out: list[str] = []
    _walk(raw, "", out)
    return out


def _walk(value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, join_path(path, i), out)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        where = join_path(path, key)
        if key == "image" and isinstance(item, str):
            _placeholder(where, "image", item, out)
        elif key in _NAMESPACE_KEYS and isinstance(item, str):
            _placeholder(where, "namespace", item, out)
        elif key in _CLAIM_KEYS and isinstance(item, str):  # a PVC or secret the pod would wait for forever
            _placeholder(where, "name", item, out)
        elif key == "pvcs" and isinstance(item, list):
            for i, pvc in enumerate(item):
                if isinstance(pvc, dict) and isinstance(pvc.get("name"), str):
                    _placeholder(join_path(join_path(where, i), "name"), "name", pvc["name"], out)
        elif key == "resources" and isinstance(item, dict):
            _resources(where, item, out)
            continue
        _walk(item, where, out)


def _placeholder(where: str, what: str, text: str, out: list[str]) -> bool:
    match = PLACEHOLDER.search(text)
    if match:
        out.append(f"{where}: {what} {text!r} holds a placeholder ({match.group(0)!r}); fill it in "
                   "(e.g. envsubst, kustomize) before applying")
    return bool(match)


def _resources(path: str, resources: dict[str, Any], out: list[str]) -> None:
    """`requests` / `limits` of a container or of a v1alpha1 service (with its `custom` map)."""
    for kind in ("requests", "limits"):
        amounts = resources.get(kind)
        if not isinstance(amounts, dict):
            continue
        for where, name, amount in _amounts(join_path(path, kind), amounts):
            if _placeholder(where, "resource name", str(name), out):
                continue
            text = str(amount)
            if isinstance(amount, bool) or amount is None:
                out.append(f"{where}: {amount!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")
            elif not _placeholder(where, "quantity", text, out) and not QUANTITY.fullmatch(text):
                out.append(f"{where}: {text!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi); the cluster "
                           "refuses it")


def _amounts(path: str, amounts: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, resource name, amount), v1alpha1's `custom` map flattened into its entries."""
    out = []
    for name, amount in amounts.items():
        if name in _NOT_QUANTITIES:
            continue
        if name == "custom" and isinstance(amount, dict):
            out += [(join_path(join_path(path, name), k), k, v) for k, v in amount.items()]
        else:
            out.append((join_path(path, name), name, amount))
    return out


def looks_like_patch(raw: Any) -> bool:
    """Strategic-merge directives anywhere, or a component / service that is only a name."""
    spec = raw.get("spec") if isinstance(raw, dict) else None
    comps = spec.get("components") if isinstance(spec, dict) else None
    services = spec.get("services") if isinstance(spec, dict) else None
    if isinstance(comps, list) and any(isinstance(c, dict) and set(c) == {"name"} for c in comps):
        return True
    if isinstance(services, dict) and any(s is None or s == {} for s in services.values()):
        return True
    return _has_directive(raw)


def _has_directive(value: Any) -> bool:
    # Every strategic-merge directive key starts with `$` ($patch, $setElementOrder/..., $retainKeys,
    # $deleteFromPrimitiveList/...); no DGD or Kubernetes field does.
    if isinstance(value, dict):
        return any(str(k).startswith("$") or _has_directive(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_directive(v) for v in value)
    return False
