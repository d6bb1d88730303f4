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
- A component is matched by name (any case), else by the name Dynamo's profiler gives it (`prefill`,
  `decode`; the aggregated worker: vLLM `worker`, SGLang `decode`, TRT-LLM `TRTLLMWorker`), else by the
  role its name says (`decode`, `prefill`, `frontend`, `planner` in it, or the bare `worker`); one the
  generated DGD does not have (`NoSuchWorker`) is an error, as in Dynamo, never applied to another.
- `apiVersion` and `kind` only say how to read the override (both or neither, as Dynamo requires:
  `problems`): the output stays v1beta1.
"""

from __future__ import annotations

import copy
from typing import Any

from dynamo.deploy.model import API_VERSION, API_VERSION_V1BETA1, KIND
from dynamo.profiler.dgd_v1alpha1 import MAIN, WORKER_TYPES, as_v1beta1

_ROLES = ("prefill", "decode", "frontend", "planner")
# The names Dynamo 1.6.1's templates give the generated components, by v1beta1 type (its agg worker's: by backend).
_DYNAMO_NAMES = {"frontend": "Frontend", "planner": "Planner", "prefill": "prefill", "decode": "decode"}
_DYNAMO_AGG = {"vllm": "worker", "sglang": "decode", "trtllm": "TRTLLMWorker"}


def problems(over: Any) -> list[str]:
    """What Dynamo refuses in `spec.overrides.dgd` before merging it (the request's admission)."""
    if not isinstance(over, dict):
        return ["spec.overrides.dgd: a partial DynamoGraphDeployment (a mapping)"]
    version, kind = over.get("apiVersion"), over.get("kind")
    if (version is None) != (kind is None):
        return [f"spec.overrides.dgd: give both apiVersion and kind, or neither (then read as {API_VERSION} "
                f"{KIND}); it has only {'apiVersion' if kind is None else 'kind'}"]
    out = []
    if kind is not None and kind != KIND:
        out.append(f"spec.overrides.dgd.kind: must be {KIND} (got {kind!r})")
    if version is not None and version not in (API_VERSION, API_VERSION_V1BETA1):
        out.append(f"spec.overrides.dgd.apiVersion: must be {API_VERSION} or {API_VERSION_V1BETA1} (got {version!r})")
    return out


def apply_override(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    structural = over.get("apiVersion") == API_VERSION_V1BETA1 or "components" in (over.get("spec") or {})
    own_secret = [] if structural else _own_secrets(over)
    if not structural:
        over = as_v1beta1(over)
    over = _matched(dgd, over)
    if not structural:
        over = _legacy_semantics(dgd, over, own_secret)
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


def _dynamo_name(comp: dict[str, Any], backend: str | None) -> str | None:
    kind = comp.get("type") or ""
    return _DYNAMO_AGG.get(backend or "") if kind == "worker" else _DYNAMO_NAMES.get(kind)


def _target(generated: list[dict[str, Any]], comp: dict[str, Any], backend: str | None) -> dict[str, Any] | None:
    """The generated component `comp` names: by name, else by Dynamo's name for it, else by role (one only)."""
    name = comp["name"].lower()
    for named in (lambda g: g["name"].lower(), lambda g: (_dynamo_name(g, backend) or "").lower()):
        found = [g for g in generated if named(g) == name]
        if len(found) == 1:
            return found[0]
    role = _named_role(comp)
    found = [g for g in generated if role is not None and _role(g) == role]
    return found[0] if len(found) == 1 else None


def _named_role(comp: dict[str, Any]) -> str | None:
    """The role an override's component names: a role word in its name (`VllmDecodeWorker`, `frontend`), or
    the bare name `worker`. None for any other name (`NoSuchWorker`, `Zzz`): such a component is not taken for
    the graph's one worker (it would change a component the user never named), and its type alone names none."""
    lowered = str(comp["name"]).lower()
    return next((r for r in _ROLES if r in lowered), "worker" if lowered == "worker" else None)


def _matched(dgd: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """The override with each component under the generated component's name."""
    generated = _components(dgd, "the generated DGD")
    wanted = _components(over, "spec.overrides.dgd")
    if not wanted:
        return over
    backend = (dgd.get("spec") or {}).get("backendFramework")
    renamed = []
    for comp in wanted:
        target = _target(generated, comp, backend)
        if target is None:
            raise ValueError(f"spec.overrides.dgd: component {comp['name']!r} is not in the generated DGD "
                             f"(it has {', '.join(g['name'] for g in generated)}); an override can only change those")
        renamed.append({**comp, "name": target["name"]})
    return {**over, "spec": {**over["spec"], "components": renamed}}


def _main(comp: dict[str, Any]) -> dict[str, Any] | None:
    containers = ((comp.get("podTemplate") or {}).get("spec") or {}).get("containers") or []
    return next((c for c in containers if isinstance(c, dict) and c.get("name") == MAIN), None)


def _own_secrets(over: dict[str, Any]) -> list[bool]:
    """For each v1alpha1 service, in order (the order `as_v1beta1` gives the components): whether it names its
    own `envFromSecret`."""
    services = (over.get("spec") or {}).get("services") if isinstance(over.get("spec"), dict) else None
    if not isinstance(services, dict):
        return []
    return [isinstance(s, dict) and bool(s.get("envFromSecret")) for s in services.values()]


def _legacy_semantics(dgd: dict[str, Any], over: dict[str, Any], own_secret: list[bool]) -> dict[str, Any]:
    """A v1alpha1 override's meaning kept on the v1beta1 graph: worker args appended; a container's `envFrom`
    added to the generated one (v1alpha1 kept the token apart, in `envFromSecret`: naming one replaces it);
    and a bare `componentType: worker` (no subComponentType) not taken for a change of a prefill/decode role."""
    over = copy.deepcopy(over)
    base = {c["name"]: c for c in _components(dgd, "the generated DGD")}
    comps = (over.get("spec") or {}).get("components") or []
    for comp, secret in zip(comps, own_secret + [False] * (len(comps) - len(own_secret))):
        generated = base[comp["name"]]
        if comp.get("type") == "worker" and generated.get("type") in ("prefill", "decode"):
            del comp["type"]
        main, generated_main = _main(comp), _main(generated)
        if main is None or generated_main is None:
            continue
        if generated.get("type") in WORKER_TYPES and isinstance(main.get("args"), list):
            main["args"] = list(generated_main.get("args") or []) + main["args"]
        if not secret and isinstance(main.get("envFrom"), list) and generated_main.get("envFrom"):
            kept = list(generated_main["envFrom"])
            main["envFrom"] = kept + [e for e in main["envFrom"] if e not in kept]
    return over
