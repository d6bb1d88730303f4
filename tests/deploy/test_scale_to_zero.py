"""`validate` warns of a service an autoscaler (KEDA's default minimum, an HPA's minReplicas 0, KEDA's
idleReplicaCount 0) or a planner (min_endpoint 0) can take to zero replicas while no frontend or router of
the file holds requests (--wait-for-workers-secs, or its env twin): such a service never comes back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from tests.deploy.test_autoscalers import EXAMPLE, MOCKER, hpa, on_adapter, scaled_object, write

WORKER = on_adapter("mocker-agg-mockerworker")


def zero_warnings(path: str) -> list[str]:
    report = validate_file(path)
    assert report.ok, report.errors
    return [w for w in report.warnings if "to zero replicas" in w]


def agg(frontend_args: list[str] | None = None, frontend_env: dict[str, str] | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((MOCKER / "agg.yaml").read_text())
    main = doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]
    main["args"] = [*main["args"], *(frontend_args or [])]
    if frontend_env:
        doc["spec"]["services"]["Frontend"]["envs"] = [{"name": k, "value": v} for k, v in frontend_env.items()]
    return doc


def keda(**spec: Any) -> dict[str, Any]:
    doc = scaled_object("demand", WORKER)
    doc["spec"].pop("minReplicaCount")
    doc["spec"].update(spec)
    return doc


@pytest.mark.parametrize("scaler", [keda(), keda(minReplicaCount=0), keda(minReplicaCount=2, idleReplicaCount=0),
                                    {**hpa("cpu", WORKER), "spec": {**hpa("cpu", WORKER)["spec"], "minReplicas": 0}}],
                         ids=["keda-default", "keda-min-0", "keda-idle-0", "hpa-min-0"])
def test_a_worker_that_can_reach_zero_with_nothing_holding_its_requests_is_a_warning(tmp_path, scaler):
    found = zero_warnings(write(tmp_path, agg(), scaler))
    assert len(found) == 1, found
    assert found[0].startswith(f"graph mocker-agg, service MockerWorker: {scaler['kind']} ")
    assert "--wait-for-workers-secs" in found[0]


@pytest.mark.parametrize("scaler", [keda(minReplicaCount=1), hpa("cpu", WORKER)], ids=["keda-min-1", "hpa-min-1"])
def test_a_worker_kept_above_zero_is_not(tmp_path, scaler):
    assert zero_warnings(write(tmp_path, agg(), scaler)) == []


@pytest.mark.parametrize("doc", [agg(["--wait-for-workers-secs", "120"]), agg(["--wait-for-workers-secs=30"]),
                                 agg(frontend_env={"DYN_WAIT_FOR_WORKERS_SECS": "60"})],
                         ids=["flag", "flag=", "env"])
def test_a_frontend_that_holds_requests_answers_it(tmp_path, doc):
    assert zero_warnings(write(tmp_path, doc, keda())) == []


def test_a_wait_of_zero_holds_nothing(tmp_path):
    doc = agg(["--wait-for-workers-secs", "0"], frontend_env={"DYN_WAIT_FOR_WORKERS_SECS": "60"})  # the flag wins
    assert len(zero_warnings(write(tmp_path, doc, keda()))) == 1


def test_a_router_that_holds_requests_answers_it(tmp_path):
    doc = agg()
    doc["spec"]["services"]["Router"] = {
        "replicas": 1, "extraPodSpec": {"mainContainer": {
            "image": "dynamo:x", "command": ["python3", "-m", "dynamo.router"],
            "args": ["--endpoint", "dynamo.backend.generate", "--wait-for-workers-secs", "90"]}}}
    assert zero_warnings(write(tmp_path, doc, keda())) == []


def _planner_graph(min_endpoint: int) -> Path | dict:
    doc = yaml.safe_load((MOCKER / "disagg_planner.yaml").read_text())
    args = doc["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["args"]
    config = json.loads(args[1])
    config["min_endpoint"] = min_endpoint
    args[1] = json.dumps(config)
    return doc


def test_a_planner_that_can_take_its_pools_to_zero_is_named(tmp_path):
    found = zero_warnings(write(tmp_path, _planner_graph(0), opt_in=False))
    assert [w.split(":")[0] for w in found] == ["graph mocker-disagg-planner, service MockerDecodeWorker",
                                                "graph mocker-disagg-planner, service MockerPrefillWorker"]
    assert all("planner Planner (min_endpoint 0)" in w for w in found)
    assert zero_warnings(write(tmp_path, _planner_graph(1), opt_in=False)) == []


def test_the_autoscaling_example_holds_its_requests():
    assert zero_warnings(str(EXAMPLE)) == []


def unnamed_warnings(path: str) -> list[str]:
    return [w for w in validate_file(path).warnings if "names no model" in w]


def test_a_holding_frontend_that_names_no_model_is_a_warning(tmp_path):
    """Started (or restarted) at zero workers, it has seen no model: 404s, unhealthy, out of its Service."""
    found = unnamed_warnings(write(tmp_path, agg(["--wait-for-workers-secs", "120"]), keda()))
    assert len(found) == 1 and found[0].startswith("graph mocker-agg, service Frontend:"), found
    assert "--model-name" in found[0]


@pytest.mark.parametrize("doc", [agg(["--wait-for-workers-secs", "120", "--model-name", "Qwen/Qwen3-0.6B"]),
                                 agg(["--wait-for-workers-secs=30", "--model-path=/models/q"]),
                                 agg(["--wait-for-workers-secs", "60"], frontend_env={"DYN_MODEL_NAME": "q"})],
                         ids=["name", "path=", "env"])
def test_a_holding_frontend_that_names_its_model_is_not(tmp_path, doc):
    assert unnamed_warnings(write(tmp_path, doc, keda())) == []


def test_nothing_is_said_of_a_model_name_where_nothing_can_reach_zero(tmp_path):
    assert unnamed_warnings(write(tmp_path, agg(["--wait-for-workers-secs", "120"]), keda(minReplicaCount=1))) == []
