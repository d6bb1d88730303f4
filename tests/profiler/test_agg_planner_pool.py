"""An aggregated graph with a planner, as Dynamo's profiler writes it: a planner in `mode: agg` scales one pool,
which it calls decode, so the graph's one aggregated worker is typed `decode` (v1beta1 `type`, v1alpha1
`subComponentType`) while its engine stays aggregated. Our own `dynamo.deploy validate`/`render` accept it,
and the planner, given the config the profiler wrote, finds that worker as its decode pool and scales it."""

from __future__ import annotations

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.planner.config import convert
from dynamo.planner.connectors.base import make_connector, resolve_pools
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd, final_documents
from tests.planner.kube_standin import KubeStandIn, kubeconfig
from tests.profiler.helpers import comps, graph, main, planner_config

AGG = Choice("agg", [WorkerChoice("agg", 2, max_num_seqs=32)], "memory-fit")
DISAGG = Choice("disagg", [WorkerChoice("prefill", 2), WorkerChoice("decode", 4)], "aiconfigurator")


def request(backend: str = "vllm", **spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r1"}, "spec": {"model": "Qwen/Qwen3-32B", "backend": backend, **spec}})


@pytest.mark.parametrize("features, kind", [
    ({"planner": {}}, "decode"),  # the profiler gives an agg graph's planner `mode: agg`
    ({"planner": {"mode": "agg", "optimization_target": "sla"}}, "decode"),
    ({"planner": {"mode": "agg", "advisory": True}}, "worker"),  # Dynamo: an advisory planner scales nothing
    ({}, "worker"),  # no planner
])
def test_the_aggregated_worker_is_the_planners_decode_pool(features, kind):
    dgd = build_dgd(request(features=features), AGG)
    worker = comps(dgd)["VllmWorker"]
    assert worker["type"] == kind
    assert ("scalingAdapter" in worker) == (kind == "decode")
    assert "--disaggregation-mode" not in main(worker)["args"]  # only its type changes: it serves whole requests
    assert [c["type"] for n, c in comps(dgd).items() if n != "VllmWorker"] == ["frontend"] + (
        ["planner"] if features else [])


@pytest.mark.parametrize("backend, name", [("sglang", "SglangWorker"), ("trtllm", "TrtllmWorker")])
def test_every_backends_aggregated_worker_is_retyped(backend, name):
    assert comps(build_dgd(request(backend, features={"planner": {}}), AGG))[name]["type"] == "decode"


def test_the_mockers_aggregated_worker_too():
    dgd = build_dgd(request(features={"planner": {}, "mocker": {"enabled": True}}), AGG)
    worker = comps(dgd)["MockerWorker"]
    assert worker["type"] == "decode" and "agg" in main(worker)["args"]  # still `--disaggregation-mode agg`


def test_a_disaggregated_graph_keeps_its_types():
    dgd = build_dgd(request(features={"planner": {}}), DISAGG)
    assert {n: c["type"] for n, c in comps(dgd).items()} == {
        "Frontend": "frontend", "VllmPrefillWorker": "prefill", "VllmDecodeWorker": "decode", "Planner": "planner"}


def test_an_override_naming_dynamos_agg_worker_still_finds_it():
    """The override is merged first, onto the worker as generated (`type: worker`, which Dynamo's templates
    name `worker` for vLLM), then the worker is retyped, as in Dynamo."""
    over = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
            "spec": {"components": [{"name": "worker", "podTemplate": {"spec": {"containers": [
                {"name": "main", "env": [{"name": "X", "value": "1"}]}]}}}]}}
    dgd = build_dgd(request(features={"planner": {}}, overrides={"dgd": over}), AGG)
    worker = comps(dgd)["VllmWorker"]
    assert worker["type"] == "decode" and {"name": "X", "value": "1"} in main(worker)["env"]


def test_validate_and_render_accept_it_and_hand_the_worker_to_the_planner(tmp_path, capsys):
    from dynamo.deploy.__main__ import main as deploy_main

    path = tmp_path / "final.yaml"
    path.write_text(yaml.safe_dump_all(final_documents(request(features={"planner": {}}), AGG)))
    report = validate_file(path)
    assert report.ok and report.warnings == [], report.lines()
    (g,) = report.graphs
    worker = g.spec.services["VllmWorker"]
    assert (worker.componentType, worker.subComponentType) == ("worker", "decode")
    assert deploy_main(["render", str(path)]) == 0
    objects = list(yaml.safe_load_all(capsys.readouterr().out))
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    assert "replicas" not in deployments["r1-dgd-vllmworker"]["spec"]  # left to the planner
    labels = deployments["r1-dgd-vllmworker"]["metadata"]["labels"]
    assert labels["nvidia.com/dynamo-sub-component-type"] == "decode"
    (role,) = [o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "r1-dgd-planner"]
    assert {n for rule in role["rules"] for n in rule.get("resourceNames", [])} == {"r1-dgd-vllmworker"}


def test_the_planner_finds_the_worker_by_its_type():
    docs = final_documents(request(features={"planner": {}}), AGG)
    cfg = convert(planner_config(docs))  # the config the Planner reads, as it reads it
    assert cfg.mode == "agg" and cfg.roles == ("decode",) and cfg.gpus_for("decode") == 2
    specs = comps(graph(docs))
    typed = {n: c for n, c in specs.items() if c["type"] == "decode"}
    assert resolve_pools(typed, cfg) == {"decode": "VllmWorker"}  # by type alone: no name fallback needed
    assert resolve_pools(specs, cfg) == {"decode": "VllmWorker"}


async def test_the_planner_scales_the_worker_through_its_scaling_adapter(tmp_path):
    """The Kubernetes connector, given the profiler's planner config and the DGD as the operator serves it,
    scales the aggregated worker through its DGDSA (`{dgd}-{component}`), as the decode pool."""
    docs = final_documents(request(features={"planner": {}}), AGG)
    dgd = graph(docs)
    api = KubeStandIn(dgd, adapters=("r1-dgd-vllmworker",))
    try:
        kubeconfig(tmp_path / "kubeconfig", api.url)
        raw = {**planner_config(docs), "environment": "kubernetes", "dgd_name": "r1-dgd", "kube_namespace": "default",
               "kubeconfig": str(tmp_path / "kubeconfig")}
        conn = make_connector(convert(raw))
        await conn.start()
        assert conn.components == {"decode": "VllmWorker"}
        await conn.scale({"decode": 3})
        method, path, ctype, body = api.requests[-1]
        assert (method, path) == ("PATCH", "/apis/nvidia.com/v1alpha1/namespaces/default/"
                                  "dynamographdeploymentscalingadapters/r1-dgd-vllmworker/scale")
        assert body == {"spec": {"replicas": 3}}
    finally:
        api.close()
