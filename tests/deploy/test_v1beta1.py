"""`nvidia.com/v1beta1` DGDs (`spec.components[]`) validate and convert like v1alpha1, and
the operator's defaults apply to both: a frontend / planner without a command gets
`python3 -m dynamo.frontend|planner`, a worker without one is an error."""

from __future__ import annotations

from pathlib import Path

import yaml

from dynamo.deploy.contract import command_of
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

V1BETA1 = sorted((REPO / "examples/backends").glob("*/deploy/v1beta1/*.yaml"))
AGG_ROUTER = REPO / "examples/backends/mocker/deploy/v1beta1/agg_router.yaml"
GUIDE = REPO / "examples/backends/mocker/deploy/guide_template.yaml"


def write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_v1beta1_examples_validate_clean():
    assert {p.parent.parent.parent.name for p in V1BETA1} >= {"mocker", "vllm"}
    for path in V1BETA1:
        report = validate_file(path)
        assert report.errors == [], (path, report.errors)
        assert len(report.graphs) == 1


def test_components_convert_to_services_with_types_gpus_and_default_commands():
    (graph,) = validate_file(REPO / "examples/backends/mocker/deploy/v1beta1/disagg_router.yaml").graphs
    assert graph.apiVersion == "nvidia.com/v1beta1"
    assert list(graph.spec.services) == ["Frontend", "decode", "prefill"]
    decode = graph.spec.services["decode"]
    assert (decode.componentType, decode.subComponentType) == ("worker", "decode")
    assert decode.gpus() == 1 and decode.replica_count == 1
    (graph,) = validate_file(AGG_ROUTER).graphs
    frontend, worker = graph.spec.services["Frontend"], graph.spec.services["MockerWorker"]
    assert command_of(frontend) == (["python3", "-m", "dynamo.frontend"], None, True)
    assert {"name": "DYN_ROUTER_MODE", "value": "kv"} in [{"name": e.name, "value": e.value}
                                                           for e in frontend.container.env]
    assert worker.replica_count == 2 and worker.gpus() == 1
    assert worker.container.envFrom == [{"secretRef": {"name": "hf-token-secret"}}]


def test_guide_template_validates_with_default_frontend_command_and_gpu_request():
    report = validate_file(GUIDE)
    assert report.errors == [] and not any("probe" in w for w in report.warnings), report.lines()
    (graph,) = report.graphs
    assert command_of(graph.spec.services["Frontend"])[2] is True
    assert graph.spec.services["MockerWorker"].gpus() == 1  # resources.requests.gpu counts


def test_planner_defaults_and_worker_without_command_is_an_error(tmp_path):
    doc = yaml.safe_load(AGG_ROUTER.read_text())
    doc["spec"]["components"].append({"name": "Planner", "type": "planner",
                                      "podTemplate": {"spec": {"containers": [{"name": "main", "image": "x"}]}}})
    del doc["spec"]["components"][1]["podTemplate"]["spec"]["containers"][0]["command"]
    del doc["spec"]["components"][1]["podTemplate"]["spec"]["containers"][0]["args"]
    report = validate_file(write(tmp_path, doc))
    assert any(e.startswith("spec.components[1].podTemplate.spec.containers[0].command: no command")
               and "MockerWorker is a worker" in e for e in report.errors), report.errors
    assert not any("components[0]" in e or "components[2]" in e for e in report.errors), report.errors


def test_v1beta1_problems_name_their_v1beta1_path(tmp_path):
    doc = yaml.safe_load(AGG_ROUTER.read_text())
    comps = doc["spec"]["components"]
    comps[1]["replica"] = 2
    comps[1]["type"] = "middle"
    comps[1]["podTemplate"]["spec"]["containers"][0]["args"].append("--no-such-flag")
    comps[0]["podTemplate"]["spec"]["containers"][0]["name"] = "frontend"
    comps.append({"name": "mockerworker", "type": "worker",
                  "podTemplate": {"spec": {"containers": [{"name": "main", "image": "x"}]}}})
    errors = validate_file(write(tmp_path, doc)).errors
    assert "spec.components[1].replica: unknown field" in errors
    assert any(e.startswith("spec.components[1].type: expected one of") for e in errors), errors
    assert any(e.startswith("spec.components[0].podTemplate.spec.containers: a container named 'main'")
               for e in errors), errors
    assert any(e.startswith("spec.components[2].name: duplicate component name") for e in errors), errors
    comps[1]["type"], comps[0]["podTemplate"]["spec"]["containers"][0]["name"] = "worker", "main"
    del comps[1]["replica"], comps[2]
    errors = validate_file(write(tmp_path, doc)).errors
    assert any(e.startswith("spec.components[1].podTemplate.spec.containers[0].args: service MockerWorker")
               and "--no-such-flag" in e for e in errors), errors


def test_probe_reading_a_file_the_command_never_writes_is_a_warning(tmp_path):
    doc = yaml.safe_load(GUIDE.read_text())
    worker = doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["mainContainer"]
    worker["args"] = [worker["args"][0].split(" 2>&1")[0]]
    report = validate_file(write(tmp_path, doc))
    assert report.ok
    assert any("readiness probe reads /tmp/worker.log, which the command never writes" in w
               for w in report.warnings), report.warnings
