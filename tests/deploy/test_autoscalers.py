"""HPAs and KEDA ScaledObjects beside a graph (Dynamo's autoscaling guide): `render` points a target
DynamoGraphDeploymentScalingAdapter at the service's rendered Deployment / LeaderWorkerSet and leaves that
object's replicas to the autoscaler; `validate` names a target the file has no adapter for and warns of
autoscalers that would fight (two on a service, or one and the graph's planner) and of the deprecated
`autoscaling` field; `run` says it does not evaluate them."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import kubernetes_validate as kv
import pytest
import yaml

from dynamo.deploy.__main__ import main as deploy_main
from dynamo.deploy.run import build_runs
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

MOCKER = REPO / "examples/backends/mocker/deploy"
EXAMPLE = MOCKER / "autoscaling.yaml"
MULTINODE = REPO / "examples/backends/vllm/deploy/v1beta1/disagg_multinode.yaml"
ADAPTER = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentScalingAdapter"}


def hpa(name: str, target: dict[str, str], **meta: str) -> dict[str, Any]:
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name, **meta},
            "spec": {"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 4,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                         "type": "Utilization", "averageUtilization": 70}}}]}}


def scaled_object(name: str, target: dict[str, str], min_replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name},
            "spec": {"scaleTargetRef": target, "minReplicaCount": min_replicas, "maxReplicaCount": 3,
                     "triggers": [{"type": "prometheus", "metadata": {
                         "serverAddress": "http://prometheus:9090", "query": "sum(up)", "threshold": "5"}}]}}


def on_adapter(name: str) -> dict[str, str]:
    return {**ADAPTER, "name": name}


def write(tmp_path: Path, graph: Path | dict, *others: dict, opt_in: bool = True) -> str:
    """The graph and `others` as one file; with `opt_in`, every service asks for its scaling adapter, as
    Dynamo's operator (1.2 on) needs to create the adapters the autoscalers target."""
    doc = yaml.safe_load(graph.read_text()) if isinstance(graph, Path) else graph
    if opt_in:
        for svc in (doc["spec"].get("services") or {}).values():
            svc.setdefault("scalingAdapter", {"enabled": True})
        for comp in doc["spec"].get("components") or []:
            comp.setdefault("scalingAdapter", {})
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump_all([doc, *others], sort_keys=False))
    return str(path)


def render(capsys, path: str, *flags: str) -> tuple[list[dict[str, Any]], str]:
    assert deploy_main(["render", path, *flags]) == 0
    out = capsys.readouterr()
    return list(yaml.safe_load_all(out.out)), out.err


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


# ----- render -----------------------------------------------------------------------------

def test_an_adapter_target_becomes_the_rendered_deployment_whose_replicas_are_left_to_it(tmp_path, capsys):
    path = write(tmp_path, MOCKER / "agg.yaml", hpa("worker-hpa", on_adapter("mocker-agg-mockerworker")))
    objects, _ = render(capsys, path, "--include-etcd")
    target = find(objects, "HorizontalPodAutoscaler", "worker-hpa")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mocker-agg-mockerworker"}
    assert "replicas" not in find(objects, "Deployment", "mocker-agg-mockerworker")["spec"]
    # Only the managed service: the frontend and the etcd keep theirs.
    assert find(objects, "Deployment", "mocker-agg-frontend")["spec"]["replicas"] == 1
    assert find(objects, "Deployment", "etcd")["spec"]["replicas"] == 1


def test_a_multinode_service_target_becomes_its_leader_worker_set(tmp_path, capsys):
    (graph,) = validate_file(MULTINODE).graphs
    decode = f"{graph.metadata.name}-decode"
    path = write(tmp_path, MULTINODE, scaled_object("decode-keda", on_adapter(decode)))
    objects, _ = render(capsys, path, "--include-etcd")
    target = find(objects, "ScaledObject", "decode-keda")["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": decode}
    assert "replicas" not in find(objects, "LeaderWorkerSet", decode)["spec"]
    others = [o for o in objects if o["kind"] in ("Deployment", "LeaderWorkerSet") and o["metadata"]["name"] != decode]
    assert others and all("replicas" in o["spec"] for o in others)


def test_a_target_already_naming_a_deployment_is_kept_and_still_manages_its_service(tmp_path, capsys):
    own = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mocker-agg-frontend"}
    elsewhere = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "some-other-app"}
    same_name = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "mocker-agg-mockerworker"}  # not ours
    path = write(tmp_path, MOCKER / "agg.yaml", hpa("frontend-hpa", own), hpa("other-hpa", elsewhere),
                 hpa("set-hpa", same_name))
    objects, _ = render(capsys, path)
    assert find(objects, "HorizontalPodAutoscaler", "frontend-hpa")["spec"]["scaleTargetRef"] == own
    assert find(objects, "HorizontalPodAutoscaler", "other-hpa")["spec"]["scaleTargetRef"] == elsewhere
    assert find(objects, "HorizontalPodAutoscaler", "set-hpa")["spec"]["scaleTargetRef"] == same_name
    assert "replicas" not in find(objects, "Deployment", "mocker-agg-frontend")["spec"]
    assert find(objects, "Deployment", "mocker-agg-mockerworker")["spec"]["replicas"] == 1


def test_an_autoscaler_goes_to_the_namespace_its_target_is_rendered_in(tmp_path, capsys):
    path = write(tmp_path, MOCKER / "agg.yaml", hpa("worker-hpa", on_adapter("mocker-agg-mockerworker"),
                                                    namespace="llm-serving"))
    objects, err = render(capsys, path, "--namespace", "team")
    assert find(objects, "HorizontalPodAutoscaler", "worker-hpa")["metadata"]["namespace"] == "team"
    assert ("warning: HorizontalPodAutoscaler worker-hpa: namespace llm-serving replaced by team, where its "
            "target Deployment mocker-agg-mockerworker is rendered") in err


def test_the_example_renders_and_validates_against_the_kubernetes_schemas(capsys):
    assert validate_file(EXAMPLE).warnings == []
    objects, _ = render(capsys, str(EXAMPLE), "--namespace", "team-a", "--include-etcd")
    for obj in objects:
        if obj["kind"] != "ScaledObject":  # KEDA's CRD: no schema in kubernetes-validate
            kv.validate(obj, kv.latest_version(), strict=True)
    frontend = find(objects, "HorizontalPodAutoscaler", "mocker-autoscaling-frontend-hpa")
    assert frontend["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    worker = find(objects, "ScaledObject", "mocker-autoscaling-mockerworker")
    assert worker["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": "mocker-autoscaling-mockerworker"}
    assert worker["spec"]["minReplicaCount"] == 0 and worker["metadata"]["namespace"] == "team-a"
    for name in ("mocker-autoscaling-frontend", "mocker-autoscaling-mockerworker"):
        assert "replicas" not in find(objects, "Deployment", name)["spec"]
    args = find(objects, "Deployment", "mocker-autoscaling-frontend")["spec"]["template"]["spec"]["containers"][0]
    assert "--wait-for-workers-secs" in args["args"]  # what lets the worker come back from zero


# ----- validate ---------------------------------------------------------------------------

def test_a_target_no_graph_has_is_an_error_naming_the_adapters_there_are(tmp_path, capsys):
    path = write(tmp_path, MOCKER / "agg.yaml", hpa("decode-hpa", on_adapter("mocker-agg-decode")))
    assert validate_file(path).errors == [
        "document 1: spec.scaleTargetRef.name: HorizontalPodAutoscaler decode-hpa targets "
        "DynamoGraphDeploymentScalingAdapter 'mocker-agg-decode', which no graph in this file has "
        "(its graphs' adapters: mocker-agg-frontend, mocker-agg-mockerworker)"]
    with pytest.raises(SystemExit):  # render validates first: nothing is rendered
        deploy_main(["render", path])
    assert capsys.readouterr().out == ""


def test_a_service_that_disables_its_adapter_has_none(tmp_path):
    doc = yaml.safe_load((MOCKER / "agg.yaml").read_text())
    doc["spec"]["services"]["MockerWorker"]["scalingAdapter"] = {"disable": True}
    (error,) = validate_file(write(tmp_path, doc, hpa("w", on_adapter("mocker-agg-mockerworker")))).errors
    assert error.endswith("which graph mocker-agg does not create (service MockerWorker has "
                          "scalingAdapter.disable: true)")


def test_the_deprecated_autoscaling_field_is_a_warning_pointing_at_the_adapter(tmp_path):
    doc = yaml.safe_load((MOCKER / "agg.yaml").read_text())
    doc["spec"]["services"]["MockerWorker"]["autoscaling"] = {"enabled": True, "minReplicas": 1, "maxReplicas": 3}
    report = validate_file(write(tmp_path, doc))
    assert report.ok
    assert report.warnings == [
        "spec.services.MockerWorker.autoscaling: deprecated and ignored (as by Dynamo's operator); autoscale the "
        "service with a HorizontalPodAutoscaler or KEDA ScaledObject whose scaleTargetRef is "
        "DynamoGraphDeploymentScalingAdapter mocker-agg-mockerworker"]


def test_two_autoscalers_on_one_service_are_a_warning(tmp_path):
    target = on_adapter("mocker-agg-mockerworker")
    report = validate_file(write(tmp_path, MOCKER / "agg.yaml", hpa("cpu", target), scaled_object("demand", target),
                                 hpa("front", on_adapter("mocker-agg-frontend"))))
    assert report.ok
    assert report.warnings == [
        "graph mocker-agg, service MockerWorker: scaled by HorizontalPodAutoscaler cpu and ScaledObject demand; "
        "they would fight over its replicas (Dynamo's autoscaling guide: one autoscaler per service)"]


def planner_graph(mode: str | None = None) -> dict[str, Any]:
    doc = yaml.safe_load((MOCKER / "disagg_planner.yaml").read_text())
    if mode:
        args = doc["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["args"]
        args[1] = json.dumps({**json.loads(args[1]), "mode": mode})
    return doc


def test_an_autoscaler_on_a_service_the_planner_scales_is_a_warning(tmp_path):
    report = validate_file(write(tmp_path, planner_graph(),
                                 hpa("decode", on_adapter("mocker-disagg-planner-mockerdecodeworker")),
                                 hpa("front", on_adapter("mocker-disagg-planner-frontend"))))
    assert report.ok
    assert report.warnings == [
        "graph mocker-disagg-planner, service MockerDecodeWorker: scaled by HorizontalPodAutoscaler decode and by "
        "the graph's planner (service Planner); they would fight over its replicas (one autoscaler per service: "
        "leave this one to the planner, or take it out of the planner's pools)"]


def test_the_planners_pools_follow_its_config(tmp_path):
    # In `prefill` mode the planner scales the prefill pool only: decode is the HPA's alone.
    doc = planner_graph(mode="prefill")
    decode = hpa("decode", on_adapter("mocker-disagg-planner-mockerdecodeworker"))
    prefill = hpa("prefill", on_adapter("mocker-disagg-planner-mockerprefillworker"))
    warnings = validate_file(write(tmp_path, doc, decode, prefill)).warnings
    assert [w.split(":")[0] for w in warnings] == ["graph mocker-disagg-planner, service MockerPrefillWorker"]


def test_a_planner_config_in_a_configmap_of_the_file_is_read_and_an_unreadable_one_guessed(tmp_path):
    doc = planner_graph()
    config = json.loads(doc["spec"]["services"]["Planner"]["extraPodSpec"]["mainContainer"]["args"][1])
    planner = doc["spec"]["services"]["Planner"]["extraPodSpec"]
    planner["mainContainer"]["args"] = ["--config", "/etc/planner/config.json"]
    planner["mainContainer"]["volumeMounts"] = [{"name": "config", "mountPath": "/etc/planner"}]
    planner["volumes"] = [{"name": "config", "configMap": {"name": "planner-config"}}]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planner-config"},
                  "data": {"config.json": json.dumps({**config, "mode": "prefill"})}}
    decode = hpa("decode", on_adapter("mocker-disagg-planner-mockerdecodeworker"))
    prefill = hpa("prefill", on_adapter("mocker-disagg-planner-mockerprefillworker"))
    read = validate_file(write(tmp_path, doc, config_map, decode, prefill)).warnings
    assert [w.split(":")[0] for w in read] == ["graph mocker-disagg-planner, service MockerPrefillWorker"]
    # Without the ConfigMap the mode cannot be known: both typed pools may be the planner's.
    guessed = validate_file(write(tmp_path, doc, decode, prefill)).warnings
    assert sorted(w.split(":")[0] for w in guessed if "planner" in w) == [
        "graph mocker-disagg-planner, service MockerDecodeWorker",
        "graph mocker-disagg-planner, service MockerPrefillWorker"]


# ----- run --------------------------------------------------------------------------------

def test_run_evaluates_the_autoscalers_it_can_and_says_where_their_prometheus_is_not_reachable(tmp_path, caplog):
    args = argparse.Namespace(file=str(EXAMPLE), overrides=[], append_args=[], volumes=[], model=str(tmp_path),
                              namespace="demo", frontend_port=8123, prometheus_endpoint=None, log_dir=None,
                              grace=1.0, control_port=0, hpa_sync_period=5.0)
    with caplog.at_level(logging.WARNING, logger="dynamo.deploy"):
        (run,) = build_runs(args, validate_file(EXAMPLE).graphs, str(tmp_path / "state"), str(tmp_path / "pods"))
    scalers = {s.label: (s.service, s.interval) for s in run.scalers}
    assert scalers == {"HorizontalPodAutoscaler mocker-autoscaling-frontend-hpa": ("Frontend", 5.0),
                       "ScaledObject mocker-autoscaling-mockerworker": ("MockerWorker", 15.0)}
    said = [r.getMessage() for r in caplog.records]
    assert any("is a cluster address; pass --prometheus-endpoint" in m for m in said), said
    assert {name: plan.replicas for name, plan in run.sup.plans.items()} == {"Frontend": 1, "MockerWorker": 1}


def test_a_target_whose_service_does_not_opt_into_its_adapter_is_a_warning(tmp_path):
    target = hpa("cpu", on_adapter("mocker-agg-mockerworker"))
    warned = validate_file(write(tmp_path, MOCKER / "agg.yaml", target, opt_in=False)).warnings
    assert len(warned) == 1 and "creates only when the service opts in: scalingAdapter: {enabled: true}" in warned[0]
    assert validate_file(write(tmp_path, MOCKER / "agg.yaml", target)).warnings == []
    beta = yaml.safe_load(MULTINODE.read_text())
    name = beta["spec"]["components"][-1]["name"]
    marker = hpa("beta", on_adapter(f"{beta['metadata']['name']}-{name.lower()}"))
    assert not any("opts in" in w for w in validate_file(write(tmp_path, beta, marker)).warnings)  # `{}` is enough
