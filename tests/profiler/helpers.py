"""Reading the profiler's output in tests: the v1beta1 DGD's components by name, a component's `main`
container and pod spec, and the planner's config from the ConfigMap its `--config` path is mounted from."""

from __future__ import annotations

import json
from typing import Any


def comps(dgd: dict) -> dict[str, dict]:
    return {c["name"]: c for c in dgd["spec"]["components"]}


def pod(comp: dict) -> dict:
    return comp["podTemplate"]["spec"]


def main(comp: dict) -> dict:
    (container,) = [c for c in pod(comp)["containers"] if c["name"] == "main"]
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def graph(docs: list[dict]) -> dict:
    (dgd,) = [d for d in docs if d["kind"] == "DynamoGraphDeployment"]
    return dgd


def planner_config(docs: list[dict]) -> dict[str, Any]:
    """The JSON the Planner reads at its `--config` path: the key of the ConfigMap mounted there."""
    planner = comps(graph(docs))["Planner"]
    path = flag(main(planner)["args"], "--config")
    mount = next(m for m in main(planner)["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in pod(planner)["volumes"] if v["name"] == mount["name"])
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]]
    return json.loads(cm["data"][path[len(mount["mountPath"].rstrip("/")) + 1:]])
