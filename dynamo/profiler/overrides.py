"""`spec.overrides.dgd`: a partial DynamoGraphDeployment merged over the one the profiler generates
(v1alpha1-shaped here), as Dynamo's profiler merges it.

- A v1alpha1 override merges maps, and a worker's argument list is appended to the generated one
  (Dynamo's legacy behaviour: `args: [--max-model-len, "8192"]` adds a flag, it does not replace the
  model path and the role).
- A v1beta1 override (`spec.components`, what Dynamo's guides now write) is read in the v1alpha1 shape
  first (`podTemplate`'s `main` container → `extraPodSpec.mainContainer`, `type` → componentType); its
  lists replace, as a structural merge does.
- In both, lists of named items (env vars, containers, volumes) merge by name, so overriding one
  variable keeps the others.
- A component is matched by name (any case), else by its role (`decode`, `prefill`, `frontend`,
  `planner`, `worker`); one the generated DGD does not have is an error, as in Dynamo.
"""

from __future__ import annotations

import copy
from typing import Any

V1BETA1 = "nvidia.com/v1beta1"
_ROLES = ("prefill", "decode", "frontend", "planner")


def apply_override(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    structural = over.get("apiVersion") == V1BETA1 or "components" in (over.get("spec") or {})
    if structural:
        over = as_v1alpha1(over)
    over = _matched(dgd, over)
    if not structural:
        over = _with_appended_args(dgd, over)
    return merge(dgd, over)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Maps merge; lists of named maps merge by name; every other value replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key in ("apiVersion", "kind"):
            continue  # the override is versioned for its own sake; ours decides the output version
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            out[key] = merge(old, value)
        elif _named_list(value) and _named_list(old):
            out[key] = _merge_named(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def _merge_named(old: list[dict], new: list[dict]) -> list[dict]:
    out = [copy.deepcopy(item) for item in old]
    at = {item["name"]: i for i, item in enumerate(out)}
    for item in new:
        if item["name"] in at:
            out[at[item["name"]]] = merge(out[at[item["name"]]], item)
        else:
            out.append(copy.deepcopy(item))
    return out


def as_v1alpha1(over: dict[str, Any]) -> dict[str, Any]:
    """A v1beta1 partial DGD in the v1alpha1 shape (only what it sets)."""
    spec = dict(over.get("spec") or {})
    services = {}
    for comp in spec.pop("components", None) or []:
        if not isinstance(comp, dict) or not comp.get("name"):
            raise ValueError("spec.overrides.dgd.spec.components: every component needs a name")
        services[comp["name"]] = _service(comp)
    out_spec: dict[str, Any] = {"services": services} if services else {}
    if spec.get("env"):
        out_spec["envs"] = spec.pop("env")
    out_spec.update(spec)
    return {**{k: v for k, v in over.items() if k != "spec"}, "spec": out_spec}


def _service(comp: dict[str, Any]) -> dict[str, Any]:
    svc = {k: v for k, v in comp.items() if k not in ("name", "type", "podTemplate", "sharedMemorySize")}
    if comp.get("type") in ("prefill", "decode"):
        svc["componentType"], svc["subComponentType"] = "worker", comp["type"]
    elif comp.get("type"):
        svc["componentType"] = comp["type"]
    if comp.get("sharedMemorySize") is not None:
        size = str(comp["sharedMemorySize"])
        svc["sharedMemory"] = {"disabled": True} if size == "0" else {"size": size}
    template = comp.get("podTemplate") or {}
    pod = dict(template.get("spec") or {})
    containers = pod.pop("containers", None) or []
    main = next((c for c in containers if c.get("name") == "main"), None)
    if main is not None:
        pod["mainContainer"] = {k: v for k, v in main.items() if k != "name"}
    sidecars = [c for c in containers if c is not main]
    if sidecars:
        pod["containers"] = sidecars
    if pod:
        svc["extraPodSpec"] = pod
    if template.get("metadata"):
        svc["extraPodMetadata"] = template["metadata"]
    return svc


def _role(name: str, svc: dict[str, Any]) -> str:
    kind = svc.get("subComponentType") or svc.get("componentType") or ""
    lowered = name.lower()
    return next((r for r in _ROLES if r == kind or r in lowered), "worker")


def _matched(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The override with each component under the generated service's name."""
    generated = dgd["spec"]["services"]
    wanted = (over.get("spec") or {}).get("services") or {}
    renamed = {}
    for name, svc in wanted.items():
        target = next((g for g in generated if g.lower() == name.lower()), None)
        if target is None:
            role = _role(name, svc)
            found = [g for g in generated if _role(g, generated[g]) == role]
            target = found[0] if len(found) == 1 else None
        if target is None:
            raise ValueError(f"spec.overrides.dgd: component {name!r} is not in the generated DGD "
                             f"(it has {', '.join(generated)}); an override can only change those")
        renamed[target] = svc
    if not wanted:
        return over
    return {**over, "spec": {**over["spec"], "services": renamed}}


def _with_appended_args(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    over = copy.deepcopy(over)
    for name, svc in ((over.get("spec") or {}).get("services") or {}).items():
        base = dgd["spec"]["services"][name]
        args = ((svc.get("extraPodSpec") or {}).get("mainContainer") or {}).get("args")
        if base.get("componentType") == "worker" and isinstance(args, list):
            svc["extraPodSpec"]["mainContainer"]["args"] = base["extraPodSpec"]["mainContainer"]["args"] + args
    return over
