"""The GlobalPlanner as a process (`python -m dynamo.global_planner`) on a file discovery store, applying
two graphs' planners' decisions through a stand-in Kubernetes API server (the documented DGD endpoints,
tests/planner/kube_standin.py): a decision within the shared GPU budget is applied to its DGD, one past it
is rejected and the graph keeps its size, a planner of an unmanaged namespace is refused, and the planner
side (`environment: global-planner`) reads its own DGD and sends its decisions there."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import PoolState, make_connector
from dynamo.planner.connectors import scale_protocol as sp
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.discovery.base import make_store
from tests.fixtures.procs import Proc, wait_until
from tests.planner.kube_standin import KubeStandIn, kubeconfig

pytestmark = pytest.mark.e2e


def dgd(name: str, **replicas: int) -> dict:
    services = {"Frontend": {"componentType": "frontend", "replicas": 1}}
    for role, n in replicas.items():
        services[f"Vllm{role.capitalize()}Worker"] = {"componentType": "worker", "subComponentType": role,
                                                       "replicas": n, "resources": {"limits": {"gpu": "1"}}}
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": name, "namespace": "team"}, "spec": {"services": services}}


@pytest.fixture
def kube(tmp_path):
    # llama: 1 prefill + 1 decode GPU; qwen: 2 decode GPUs. 4 of a budget of 5 in use.
    server = KubeStandIn(dgd("llama", prefill=1, decode=1), versions=("v1alpha1",), others=[dgd("qwen", decode=2)])
    kubeconfig(tmp_path / "kubeconfig", server.url)
    yield server
    server.close()


@pytest.fixture
def global_planner(tmp_path, kube):
    env = {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp_path / "kv"), "DYN_NAMESPACE": "global-infra",
           "POD_NAMESPACE": "team", "KUBECONFIG": str(tmp_path / "kubeconfig")}
    proc = Proc("dynamo.global_planner", ["--max-total-gpus", "5", "--managed-namespaces", "team-llama", "team-qwen"],
                env, tmp_path, "global_planner")
    wait_until(lambda: not proc.alive() or "GlobalPlanner: global-infra" in proc.log(), 60, "GlobalPlanner up")
    assert proc.alive(), proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture
async def runtime(tmp_path):
    store = make_store("file", root=str(tmp_path / "kv"))
    await store.start()
    rt = DistributedRuntime(store, "team-llama")
    yield rt
    await rt.shutdown()


def planner_config(tmp_path, graph: str, **kw) -> PlannerConfig:
    return PlannerConfig(**{"environment": "global-planner", "global_planner_namespace": "global-infra",
                            "namespace": f"team-{graph}", "dgd_name": graph, "kube_namespace": "team",
                            "kubeconfig": str(tmp_path / "kubeconfig"), "mode": "disagg", **kw})


async def test_decisions_within_the_budget_are_applied_and_past_it_rejected(tmp_path, kube, global_planner, runtime):
    llama = make_connector(planner_config(tmp_path, "llama"), runtime=runtime)
    await llama.start()
    assert await llama.state() == {"prefill": PoolState(1, 1), "decode": PoolState(1, 1)}  # read from its own DGD
    await llama.scale({"decode": 2})  # 5 of 5 GPUs
    assert kube.components("llama")["VllmDecodeWorker"]["replicas"] == 2
    assert (await llama.state())["decode"] == PoolState(2, 1)  # the operator has not rolled it out yet

    qwen = make_connector(planner_config(tmp_path, "qwen", mode="decode"), runtime=runtime)
    await qwen.start()
    await qwen.scale({"decode": 3})  # 6 of 5: rejected, and the planner goes on
    assert kube.components("qwen")["VllmDecodeWorker"]["replicas"] == 2
    assert "GPU budget exceeded: request would use 6 total GPUs, max allowed is 5" in global_planner.log()

    await llama.scale({"decode": 1})  # giving back is always within the budget
    await qwen.scale({"decode": 3})
    assert kube.components("qwen")["VllmDecodeWorker"]["replicas"] == 3

    stranger = make_connector(planner_config(tmp_path, "qwen", namespace="team-other", mode="decode"), runtime=runtime)
    await stranger.start()
    with pytest.raises(RuntimeError, match="not authorized"):
        await stranger.scale({"decode": 1})
    assert kube.components("qwen")["VllmDecodeWorker"]["replicas"] == 3
    for c in (llama, qwen, stranger):
        await c.close()


async def address_of(runtime, endpoint: str) -> str:
    from dynamo.runtime import records

    found = await runtime.store.get_prefix(records.endpoint_prefix(
        records.INSTANCES, records.EndpointId("global-infra", sp.COMPONENT, endpoint)))
    return records.instance_decoder.decode(next(iter(found.values()))).address


async def test_a_blocking_request_is_answered_once_its_pools_are_ready(kube, global_planner, runtime):
    import threading

    request = sp.ScaleRequest(caller_namespace="team-llama", graph_deployment_name="llama", k8s_namespace="team",
                              blocking=True, target_replicas=[sp.TargetReplica(sub_component_type="prefill",
                                                                               desired_replicas=2)])
    threading.Timer(1.0, kube.mark_ready, (True, "llama")).start()  # the operator rolls it out a second later
    stream = await runtime.open_stream(await address_of(runtime, sp.SCALE_ENDPOINT), sp.SCALE_ENDPOINT,
                                       sp.encode(request))
    reply = sp.decode_response(await anext(aiter(stream)))
    assert (reply.status, reply.current_replicas) == (sp.SUCCESS, {"prefill": 2}), reply
    assert reply.message.endswith("(ready)")


async def test_health_and_the_wire_format(tmp_path, kube, global_planner, runtime):
    address = await address_of(runtime, sp.HEALTH_ENDPOINT)
    stream = await runtime.open_stream(address, sp.HEALTH_ENDPOINT, b"")
    health = msgspec.msgpack.decode(await anext(aiter(stream)))
    assert health == {"status": "healthy", "component": "GlobalPlanner", "namespace": "global-infra",
                      "managed_namespaces": ["team-llama", "team-qwen"]}
    bad = await runtime.open_stream(address, sp.SCALE_ENDPOINT, b"\x81\xa1x\x01")  # not a ScaleRequest
    with pytest.raises(Exception, match="bad_request|ScaleRequest|Object missing"):
        await anext(aiter(bad))


def rendered(name: str) -> list[dict]:
    """`dynamo.deploy render` of the vLLM disagg example as graph `name`: its Deployments (1 GPU each)."""
    import yaml

    from dynamo.deploy.render import render
    from dynamo.deploy.validate import validate_document, Report
    from tests.fixtures.procs import REPO

    doc = yaml.safe_load((REPO / "examples/backends/vllm/deploy/disagg.yaml").read_text())
    doc["metadata"]["name"] = name
    report = Report(name)
    validate_document(doc, report, 0)
    return [o for o in render(report.graphs[0], "team") if o["kind"] == "Deployment"]


async def test_rendered_graphs_without_the_operator_share_the_budget_too(tmp_path, runtime):
    # No DGD kind is served (no operator): the GlobalPlanner reads the graphs from their rendered
    # Deployments, counts their GPUs, and scales them through the Deployment scale subresource.
    server = KubeStandIn(None, deployments=rendered("model-a") + rendered("model-b"))
    kubeconfig(tmp_path / "kubeconfig", server.url)
    env = {"DYN_DISCOVERY_BACKEND": "file", "DYN_FILE_KV": str(tmp_path / "kv"), "DYN_NAMESPACE": "global-infra",
           "POD_NAMESPACE": "team", "KUBECONFIG": str(tmp_path / "kubeconfig")}
    proc = Proc("dynamo.global_planner", ["--max-total-gpus", "5"], env, tmp_path, "global_planner_rendered")
    try:
        wait_until(lambda: not proc.alive() or "GlobalPlanner: global-infra" in proc.log(), 60, "GlobalPlanner up")
        graph_a = make_connector(planner_config(tmp_path, "model-a", kube_deployment_selector=(
            "nvidia.com/dynamo-graph-deployment-name=model-a")), runtime=runtime)
        await graph_a.start()
        assert await graph_a.state() == {"prefill": PoolState(1, 1), "decode": PoolState(1, 1)}
        await graph_a.scale({"decode": 2})  # 5 of 5
        assert server.deployments["model-a-vllmdecodeworker"]["spec"]["replicas"] == 2
        graph_b = make_connector(planner_config(tmp_path, "model-b", mode="decode", kube_deployment_selector=(
            "nvidia.com/dynamo-graph-deployment-name=model-b")), runtime=runtime)
        await graph_b.start()
        await graph_b.scale({"decode": 2})  # 6 of 5: rejected
        assert server.deployments["model-b-vllmdecodeworker"]["spec"]["replicas"] == 1
        assert "request would use 6 total GPUs, max allowed is 5" in proc.log()
        for c in (graph_a, graph_b):
            await c.close()
    finally:
        assert proc.stop() == 0, proc.log()
        server.close()
