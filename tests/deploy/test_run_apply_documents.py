"""`POST /apply` re-reads the file's HPAs / ScaledObjects and DynamoModels, on one real `run` of a mocker graph
(a frontend and one LoRA-enabled worker whose scaling adapter is enabled). Each test sets up the state it needs
(the module shares one run: one start is most of its time on 2 cores): an HPA on the worker's scaling adapter
added by an apply scales the worker, edited it scales to its new maximum, removed it stops (its driver gone, no
later decision) and the count it left stays, owned by the adapter (Dynamo's replica ownership model), until
/scale changes it; an unreadable HPA or a bad DynamoModel refuses the apply and changes nothing; a DynamoModel
added puts its adapter on the worker, an edited source reloads it, a removed one is unloaded.
In process (a Deployment target, a refusal after the autoscalers were prepared): test_run_apply_in_process.py."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from dynamo.llm.tiny_lora import build_tiny_lora
from tests.deploy.helpers import DeployRun
from tests.deploy.manifests import mocker_graph
from tests.deploy.test_run_apply import post_apply
from tests.fixtures.procs import http_get, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
MODEL, ADAPTER = "tiny-llama", "tiny-lora"
HPA_LINE = "HorizontalPodAutoscaler worker-hpa: MockerWorker"


def graph() -> dict:
    doc = mocker_graph(worker={"replicas": 1, "modelRef": {"name": MODEL}, "scalingAdapter": {"enabled": True},
                               "main": {"args": ["--model-path", "/opt/models/tiny-llama", "--model-name", MODEL,
                                                 "--speedup-ratio", "10", "--enable-lora", "--max-lora-rank", "8"]}})
    doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["terminationGracePeriodSeconds"] = 20
    return doc


def hpa(**spec) -> dict:
    """Memory per replica against a 1 MiB target: any worker is far above it, so the HPA wants its maximum."""
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "worker-hpa"},
            "spec": {"scaleTargetRef": {"apiVersion": "nvidia.com/v1alpha1",
                                        "kind": "DynamoGraphDeploymentScalingAdapter", "name": "compat-mockerworker"},
                     "minReplicas": 1, "maxReplicas": 2, "metrics": [{"type": "Resource", "resource": {
                         "name": "memory", "target": {"type": "AverageValue", "averageValue": "1Mi"}}}], **spec}}


def dynamo_model(uri: str, base: str = MODEL) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoModel", "metadata": {"name": ADAPTER},
            "spec": {"modelName": ADAPTER, "baseModelName": base, "modelType": "lora", "source": {"uri": uri}}}


def workers(run: DeployRun) -> int:
    return run.status()["services"]["MockerWorker"]


def full_log(run: DeployRun) -> str:
    return run.log_path.read_text(errors="replace")


def adapters_on_workers(run: DeployRun) -> list[set[str]]:
    out = []
    for rep in run.replicas("MockerWorker"):
        status, body = http_get(f"http://127.0.0.1:{rep['system_port']}/v1/loras")
        out.append(set(json.loads(body)["loras"]) if status == 200 else set())
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("apply-docs")
    path = tmp / "graph.yaml"
    path.write_text(yaml.safe_dump(graph()))
    deploy = DeployRun(path, tmp, "--model", str(tiny_model), "--no-status", "--hpa-sync-period", "1")
    deploy.tmp = tmp
    try:
        deploy.wait_ready({"Frontend": 1, "MockerWorker": 1}, timeout=120)
        yield deploy
    finally:
        deploy.stop()
        assert deploy.survivors() == []


def test_an_hpa_added_edited_and_removed_by_applies(run):
    # added: it scales the worker to its maximum
    assert "autoscalers" not in run.status()
    status, body = post_apply(run, graph(), hpa())
    assert status == 200, body
    assert body["applied"]["autoscalers"] == {"added": ["HorizontalPodAutoscaler worker-hpa"]}
    wait_until(lambda: workers(run) == 2, 60, "the HPA scaled the worker to its maximum")
    run.wait_ready({"MockerWorker": 2}, timeout=120)
    (evaluated,) = run.status()["autoscalers"]
    assert evaluated["autoscaler"] == "HorizontalPodAutoscaler worker-hpa" and evaluated["every_s"] == 1
    assert f"{HPA_LINE} 1 -> 2" in full_log(run)

    # edited: a new evaluator, the count still the autoscaler's (2, not the file's 1), then its new maximum
    status, body = post_apply(run, graph(), hpa(maxReplicas=3))
    assert status == 200, body
    assert body["applied"]["autoscalers"] == {"changed": ["HorizontalPodAutoscaler worker-hpa"]}
    assert "MockerWorker" in body["applied"]["unchanged"]
    wait_until(lambda: workers(run) == 3, 60, "the edited HPA scaled to its new maximum")
    run.wait_ready({"MockerWorker": 3}, timeout=120)

    # removed: it stops; its target, the scaling adapter, keeps the count it left (not the file's 1)
    status, body = post_apply(run, graph())
    assert status == 200, body
    assert body["applied"]["autoscalers"] == {"removed": ["HorizontalPodAutoscaler worker-hpa"]}
    assert body["applied"]["scaled"] == {} and "MockerWorker" in body["applied"]["unchanged"], body
    assert any("its replicas (3) stay, owned by its scaling adapter" in n and "/scale" in n
               for n in body["applied"]["notes"]), body
    assert "autoscalers" not in run.status()
    decisions = full_log(run).count(HPA_LINE)
    time.sleep(5)  # five of its sync periods: a driver left running would decide again
    assert workers(run) == 3 and full_log(run).count(HPA_LINE) == decisions
    assert "HorizontalPodAutoscaler worker-hpa stopped scaling MockerWorker" in full_log(run)

    # /scale is what changes the adapter's count
    run.scale("MockerWorker", 1)
    run.wait_ready({"MockerWorker": 1}, timeout=120)


def test_an_unreadable_hpa_or_a_bad_dynamo_model_refuses_the_apply(run):
    before = run.status()
    broken, text = hpa(), hpa(metrics="x")
    del broken["spec"]["maxReplicas"]
    status, body = post_apply(run, graph(), broken)
    assert status == 400 and "cannot read 'maxReplicas'" in body["error"], body
    status, body = post_apply(run, graph(), text)
    assert status == 400 and "cannot read a field of the wrong kind (spec.metrics" in body["error"], body
    status, body = post_apply(run, graph(), dynamo_model("file:///nowhere", base="nobody"))
    assert status == 400 and "no service of compat has modelRef.name 'nobody'" in body["error"], body
    after = run.status()
    assert after["rollout"]["generation"] == before["rollout"]["generation"]
    assert after.get("autoscalers") == before.get("autoscalers") and after["models"] == before["models"]
    assert {r["pid"] for r in after["replicas"]} == {r["pid"] for r in before["replicas"]}


def test_a_dynamo_model_added_edited_and_removed_by_applies(run, tiny_model):
    status, body = post_apply(run, graph())  # from the base graph, one worker, whatever came before
    assert status == 200, body
    run.scale("MockerWorker", 1)
    run.wait_ready({"MockerWorker": 1}, timeout=120)
    first = build_tiny_lora(tiny_model, run.tmp / "lora-v1")
    second = build_tiny_lora(tiny_model, run.tmp / "lora-v2", seed=11)
    status, body = post_apply(run, graph(), dynamo_model(first.as_uri()))
    assert status == 200 and body["applied"]["models"]["added"] == [ADAPTER], body
    wait_until(lambda: adapters_on_workers(run) == [{ADAPTER}], 60, "the adapter on the worker")
    wait_until(lambda: run.status()["models"][0]["ready"] == 1, 30, "adapter READY 1/1")

    status, body = post_apply(run, graph(), dynamo_model(second.as_uri()))
    assert status == 200 and body["applied"]["models"]["changed"] == [ADAPTER], body
    wait_until(lambda: f"loaded from {second.as_uri()}" in full_log(run), 60, "the adapter reloaded from its new source")
    assert adapters_on_workers(run) == [{ADAPTER}]

    status, body = post_apply(run, graph())
    assert status == 200 and body["applied"]["models"]["removed"] == [ADAPTER], body
    wait_until(lambda: adapters_on_workers(run) == [set()], 60, "the adapter unloaded from the worker")
    assert run.status()["models"] == []
