"""Produce the planner-config fixtures beside this file with NVIDIA Dynamo 1.6.1 itself.

Run with the anchor venv's Python (scripts/install_anchor_dynamo.sh; the tests only read the JSON):

    .venv-anchor/bin/python tests/planner/data/generate_dynamo_planner_configs.py

- dynamo_1_6_1_planner_default.json: `PlannerConfig().model_dump_json()`, verbatim.
- dynamo_1_6_1_planner_profiler.json: what Dynamo's profiler writes into the planner's ConfigMap
  (`dgd_generation._build_planner_config` for a request with `features.planner: {optimization_target:
  sla}`, picks TP2 prefill / TP4 decode and a rapid-mode AIC interpolation spec, then
  `profile_results_dir = PROFILE_DATA_MOUNT` and `model_dump_json()`), verbatim.
- dynamo_1_6_1_planner_fields.json: the field names of `PlannerConfig` and of its nested sections that
  refuse unknown keys (`extra="forbid"`), the fields whose type admits null, and the validation aliases:
  what `dynamo/planner/dynamo_schema.py` writes down by hand is checked against it.

The wheel's `dynamo.planner` package imports scikit-learn and its profiler pandas at import time; neither
is needed for the config models, so the package's `__init__` is skipped and pandas stubbed. No
`PROMETHEUS_*` variable may be set (they are `PlannerConfig` defaults, excluded from the dump anyway).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
import time
import types
import typing
from pathlib import Path

OUT = Path(__file__).resolve().parent


def _import_without_heavy_inits() -> None:
    import dynamo

    planner = types.ModuleType("dynamo.planner")
    planner.__path__ = [os.path.join(dynamo.__path__[0], "planner")]
    sys.modules["dynamo.planner"] = planner
    pandas = types.ModuleType("pandas")
    pandas.Series = pandas.DataFrame = object  # only named in annotations of the profiler's helpers
    sys.modules["pandas"] = pandas


def _model_of(annotation):
    """The pydantic model a field holds (through Optional), and whether it is a list of them."""
    from pydantic import BaseModel

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Union and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        inner = typing.get_args(annotation)[0]
        return (inner, True) if isinstance(inner, type) and issubclass(inner, BaseModel) else (None, False)
    return (annotation, False) if isinstance(annotation, type) and issubclass(annotation, BaseModel) else (None, False)


def field_tree(model) -> dict:
    """{name: None} for a leaf; {name: {...}} for a section refusing unknown keys; {name: [{...}]} for a list
    of such entries. Sections that ignore unknown keys are leaves: any content passes Dynamo there."""
    tree = {}
    for name, info in model.model_fields.items():
        sub, many = _model_of(info.annotation)
        key = info.alias or name
        if sub is not None and sub.model_config.get("extra") == "forbid":
            tree[key] = [field_tree(sub)] if many else field_tree(sub)
        else:
            tree[key] = None
    return tree


def nullable(model) -> list[str]:
    return sorted(name for name, info in model.model_fields.items()
                  if type(None) in typing.get_args(info.annotation))


def aliases(model) -> dict[str, str]:
    from pydantic import AliasChoices

    out = {}
    for name, info in model.model_fields.items():
        if isinstance(info.validation_alias, AliasChoices):
            out.update({a: name for a in info.validation_alias.choices if a != name})
    return out


def profiler_dump() -> str:
    from dynamo.planner.config.aic_interpolation_spec import AICInterpolationSpec
    from dynamo.planner.config.parallelization import PickedParallelConfig
    from dynamo.planner.config.planner_config import PlannerConfig
    from dynamo.profiler.utils import dgd_generation

    request = types.SimpleNamespace(
        model="Qwen/Qwen3-0.6B", sla=None,
        features=types.SimpleNamespace(planner=PlannerConfig(optimization_target="sla")))
    prefill, decode = PickedParallelConfig(tp=2), PickedParallelConfig(tp=4)
    aic = AICInterpolationSpec(hf_id="Qwen/Qwen3-0.6B", system="h200_sxm", backend="vllm", isl=3000, osl=150,
                               sweep_max_context_length=8192, prefill_interpolation_granularity=16,
                               decode_interpolation_granularity=6, prefill_pick=prefill, decode_pick=decode)
    cfg = dgd_generation._build_planner_config(request, prefill, decode, aic_spec=aic)
    cfg.profile_results_dir = dgd_generation.PROFILE_DATA_MOUNT  # as generate_dgd_config does
    return cfg.model_dump_json()


def main() -> None:
    leaked = [k for k in os.environ if k.startswith("PROMETHEUS_")]
    if leaked:
        raise SystemExit(f"unset {leaked} first: they are PlannerConfig defaults")
    os.environ["WORKSPACE_DIR"] = "/workspace"  # the profiler image's workspace (PROFILE_DATA_MOUNT)
    _import_without_heavy_inits()
    from dynamo.planner.config.planner_config import PlannerConfig

    (OUT / "dynamo_1_6_1_planner_default.json").write_text(PlannerConfig().model_dump_json() + "\n")
    (OUT / "dynamo_1_6_1_planner_profiler.json").write_text(profiler_dump() + "\n")
    provenance = {"producer": "NVIDIA Dynamo (PyPI)", "ai-dynamo": importlib.metadata.version("ai-dynamo"),
                  "python": platform.python_version(), "generator": "tests/planner/data/" + Path(__file__).name,
                  "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "source": "dynamo.planner.config.planner_config.PlannerConfig"}
    fields = {"provenance": provenance, "fields": field_tree(PlannerConfig), "nullable": nullable(PlannerConfig),
              "aliases": aliases(PlannerConfig)}
    (OUT / "dynamo_1_6_1_planner_fields.json").write_text(json.dumps(fields, indent=1) + "\n")


if __name__ == "__main__":
    main()
