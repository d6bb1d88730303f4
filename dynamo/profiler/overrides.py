"""`spec.overrides.dgd`: a partial DynamoGraphDeployment merged over the one the profiler generates
(`nvidia.com/v1beta1`), as Dynamo's profiler merges it.

- A v1beta1 override (`spec.components`, what Dynamo's guides now write) merges structurally: maps merge,
  lists of named items merge by name (components, containers such as `main`, env vars, volumes), every
  other list replaces (a `main` container's `args: [...]` is the whole argument list).
- A v1alpha1 override (`spec.services`; one with neither apiVersion nor kind is read as v1alpha1, as Dynamo
  reads it) is converted to v1beta1 first, as the operator converts between its served versions
  (`dgd_v1alpha1.py`), and keeps Dynamo's legacy behaviour: a worker's argument list is appended to the
  generated one (`args: [--max-model-len, "8192"]` adds a flag, it does not replace the model path and the
  role), and `componentType: worker` leaves a prefill or decode worker's role alone.
- A component is matched by name (any case), else by its role (`decode`, `prefill`, `frontend`,
  `planner`, `worker`); one the generated DGD does not have is an error, as in Dynamo.
- `apiVersion` and `kind` only say how to read the override: the output stays v1beta1.
"""

from __future__ import annotations

import copy
from typing import Any

from dynamo.profiler.dgd_v1alpha1 import as_v1beta1

V1BETA1 = "nvidia.com/v1beta1"
_ROLES = ("prefill", "decode", "frontend", "planner")
_WORKER_TYPES = ("worker", "prefill", "decode")


def apply_override(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    structural = over.get("apiVersion") == V1BETA1 or "components" in (over.get("spec") or {})
    if not structural:
        over = as_v1beta1(over)
    over = _matched(dgd, over)
    if not structural:
        over = _legacy_semantics(dgd, over)
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


def _role(comp: dict[str, Any]) -> str:
    kind = comp.get("type") or ""
    lowered = str(comp.get("name", "")).lower()
    return next((r for r in _ROLES if r == kind or r in lowered), "worker")


def _components(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    comps = (doc.get("spec") or {}).get("components") or []
    if not isinstance(comps, list) or not all(isinstance(c, dict) and c.get("name") for c in comps):
        raise ValueError(f"{where}.spec.components: a list of components, each with a name")
    return comps


def _matched(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The override with each component under the generated component's name."""
    generated = _components(dgd, "the generated DGD")
    wanted = _components(over, "spec.overrides.dgd")
    if not wanted:
        return over
    renamed = []
    for comp in wanted:
        name = comp["name"]
        target = next((g for g in generated if g["name"].lower() == name.lower()), None)
        if target is None:
            found = [g for g in generated if _role(g) == _role(comp)]
            target = found[0] if len(found) == 1 else None
        if target is None:
            raise ValueError(f"spec.overrides.dgd: component {name!r} is not in the generated DGD "
                             f"(it has {', '.join(g['name'] for g in generated)}); an override can only change those")
        renamed.append({**comp, "name": target["name"]})
    return {**over, "spec": {**over["spec"], "components": renamed}}


def _main(comp: dict[str, Any]) -> dict[str, Any] | None:
    containers = ((comp.get("podTemplate") or {}).get("spec") or {}).get("containers") or []
    return next((c for c in containers if isinstance(c, dict) and c.get("name") == "main"), None)


def _legacy_semantics(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """A v1alpha1 override's meaning kept on the v1beta1 graph: worker args appended, and a bare
    `componentType: worker` (no subComponentType) not taken for a change of a prefill/decode role."""
    over = copy.deepcopy(over)
    base = {c["name"]: c for c in _components(dgd, "the generated DGD")}
    for comp in (over.get("spec") or {}).get("components") or []:
        generated = base[comp["name"]]
        if comp.get("type") == "worker" and generated.get("type") in ("prefill", "decode"):
            del comp["type"]
        main, generated_main = _main(comp), _main(generated)
        if (generated.get("type") in _WORKER_TYPES and main is not None and generated_main is not None
                and isinstance(main.get("args"), list)):
            main["args"] = list(generated_main.get("args") or []) + main["args"]
    return over
