"""Small DGD manifests built in tests: a frontend and one mocker worker, edited per test; a graph of one service
running a given command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dynamo.deploy.model import Graph
from dynamo.deploy.validate import Report, validate_file


def mocker_graph(frontend: dict[str, Any] | None = None, worker: dict[str, Any] | None = None,
                 graph_envs: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A v1alpha1 DGD; `frontend` / `worker` are merged into the services (`main` into their main container)."""
    services: dict[str, Any] = {
        "Frontend": {"componentType": "frontend", "extraPodSpec": {"mainContainer": {"image": "x/y:1"}}},
        "MockerWorker": {"componentType": "worker", "extraPodSpec": {"mainContainer": {
            "image": "x/y:1", "command": ["python3", "-m", "dynamo.mocker"],
            "args": ["--model-path", "/opt/models/tiny-llama", "--model-name", "tiny-llama"]}}},
    }
    for name, edit in (("Frontend", frontend), ("MockerWorker", worker)):
        edit = dict(edit or {})
        services[name]["extraPodSpec"]["mainContainer"].update(edit.pop("main", {}))
        services[name].update(edit)
    spec: dict[str, Any] = {"services": services}
    if graph_envs:
        spec["envs"] = graph_envs
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": "compat"}, "spec": spec}


def one_service_graph(name: str, command: list[str], args: list[str] | None = None, *,
                      pod: dict[str, Any] | None = None, **service: Any) -> dict[str, Any]:
    """A v1alpha1 DGD `name` whose one service, `Worker` (one replica), runs `command` with `args` from image
    `local`; `service` fields are set on the service, `pod` on its extraPodSpec."""
    container: dict[str, Any] = {"image": "local", "command": command}
    if args is not None:
        container["args"] = args
    worker: dict[str, Any] = {"componentType": "worker", "replicas": 1,
                              "extraPodSpec": {**(pod or {}), "mainContainer": container}}
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
            "spec": {"services": {"Worker": {**worker, **service}}}}


def check(doc: dict[str, Any], tmp_path: Path) -> Report:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return validate_file(path)


def load(doc: dict[str, Any], tmp_path: Path) -> Graph:
    report = check(doc, tmp_path)
    assert report.ok, report.errors
    (graph,) = report.graphs
    return graph
