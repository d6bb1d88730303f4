"""Connectors against real interfaces: the Kubernetes connector (official client, loaded
from a kubeconfig) against a stand-in API server implementing the documented endpoints
it uses (`kube_standin.py`); the virtual connector through a real discovery store, with
the planner giving up on a decision nobody applies."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import PoolState, make_connector
from dynamo.planner.connectors.virtual import VirtualOrchestrator
from dynamo.planner.load_scaling import Decision
from dynamo.planner.observe import FpmCollector
from dynamo.planner.planner import Planner
from dynamo.runtime.discovery.base import make_store
from tests.planner.kube_standin import KubeStandIn, kubeconfig


def v1beta1_dgd() -> dict:
    return {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": "llama", "namespace": "team"},
            "spec": {"components": [
                {"name": "Frontend", "type": "frontend", "replicas": 1},
                {"name": "VllmPrefillWorker", "type": "worker", "subComponentType": "prefill", "replicas": 1},
                {"name": "VllmDecodeWorker", "type": "worker", "subComponentType": "decode", "replicas": 2}]}}


def v1alpha1_dgd() -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": "llama", "namespace": "team"},
            "spec": {"services": {"Frontend": {"componentType": "frontend", "replicas": 1},
                                  "prefill": {"componentType": "worker", "subComponentType": "prefill",
                                              "replicas": 1},
                                  "decode": {"componentType": "worker", "subComponentType": "decode",
                                             "replicas": 1}}}}


@pytest.fixture
def kube(tmp_path):
    servers = []

    def start(dgd: dict, **kw) -> KubeStandIn:
        server = KubeStandIn(dgd, **kw)
        servers.append(server)
        kubeconfig(tmp_path / "kubeconfig", server.url)
        return server

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def k8s_cfg(tmp_path):
    def make(**kw) -> PlannerConfig:
        return PlannerConfig(**{"environment": "kubernetes", "dgd_name": "llama", "kube_namespace": "team",
                                "kubeconfig": str(tmp_path / "kubeconfig"), **kw})
    return make


async def test_scales_through_the_scaling_adapter_and_waits_for_ready(kube, k8s_cfg):
    api = kube(v1beta1_dgd(), adapters=("llama-vllmprefillworker", "llama-vllmdecodeworker"))
    conn = make_connector(k8s_cfg())
    await conn.start()
    assert conn.components == {"prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}
    assert await conn.state() == {"prefill": PoolState(1, 1), "decode": PoolState(2, 2)}
    await conn.scale({"decode": 3})
    method, path, ctype, body = api.requests[-1]
    assert (method, path) == ("PATCH", "/apis/nvidia.com/v1alpha1/namespaces/team/"
                              "dynamographdeploymentscalingadapters/llama-vllmdecodeworker/scale")
    assert "merge-patch" in ctype and body == {"spec": {"replicas": 3}}
    assert (await conn.state())["decode"] == PoolState(3, 2)  # Ready=False: the new replica is pending
    api.mark_ready(True)
    assert (await conn.state())["decode"] == PoolState(3, 3)


async def test_falls_back_to_a_guarded_json_patch_without_an_adapter(kube, k8s_cfg):
    api = kube(v1beta1_dgd())
    conn = make_connector(k8s_cfg())
    await conn.start()
    await conn.scale({"prefill": 2})
    scale_call, get_call, patch_call = api.requests[-3:]
    assert scale_call[1].endswith("/llama-vllmprefillworker/scale")  # 404 first
    method, path, ctype, body = patch_call
    assert (method, path) == ("PATCH", "/apis/nvidia.com/v1beta1/namespaces/team/dynamographdeployments/llama")
    assert "json-patch" in ctype
    assert body == [{"op": "test", "path": "/spec/components/1/name", "value": "VllmPrefillWorker"},
                    {"op": "add", "path": "/spec/components/1/replicas", "value": 2}]
    assert api.components()["VllmPrefillWorker"]["replicas"] == 2


async def test_v1alpha1_only_server(kube, k8s_cfg):
    api = kube(v1alpha1_dgd(), versions=("v1alpha1",))
    conn = make_connector(k8s_cfg())
    await conn.start()
    assert conn.version == "v1alpha1" and conn.components == {"prefill": "prefill", "decode": "decode"}
    await conn.scale({"decode": 4})
    assert api.requests[-1][3] == [{"op": "add", "path": "/spec/services/decode/replicas", "value": 4}]
    assert api.components()["decode"]["replicas"] == 4


async def test_missing_dgd_is_an_error(kube, k8s_cfg):
    kube(v1beta1_dgd())
    conn = make_connector(k8s_cfg(dgd_name="nope"))
    with pytest.raises(Exception, match="404|Not Found"):
        await conn.start()


def rendered_planner_graph() -> tuple[list[dict], dict[str, str]]:
    """`dynamo.deploy render` of the mocker planner example: its objects, and the planner container's env."""
    from dynamo.deploy.run import load_graphs
    from dynamo.deploy.render import render
    from tests.fixtures.procs import REPO

    objects = render(load_graphs(str(REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"))[0], "team")
    planner = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-planner"))
    env = {e["name"]: e.get("value") for e in planner["spec"]["template"]["spec"]["containers"][0]["env"]}
    return objects, env


async def test_a_rendered_graph_is_scaled_through_its_deployments(kube, tmp_path, monkeypatch):
    # No operator, no DGD: the planner render configured finds the graph's Deployments by label and scales
    # them through the Deployment scale subresource, reading readiness from the Deployment's status.
    from dynamo.planner.config import PlannerArgs, load_config
    from dynamo.runtime.config import parse_config

    objects, env = rendered_planner_graph()
    api = kube(None, deployments=[o for o in objects if o["kind"] == "Deployment"])
    monkeypatch.setenv("DYN_PLANNER_DEPLOYMENT_SELECTOR", env["DYN_PLANNER_DEPLOYMENT_SELECTOR"])
    monkeypatch.setenv("POD_NAMESPACE", "team")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    cfg = load_config('{"environment": "kubernetes", "backend": "mocker"}', parse_config(PlannerArgs, []))
    conn = make_connector(cfg)
    await conn.start()
    graph = "mocker-disagg-planner"
    assert conn.deployments == {"prefill": f"{graph}-mockerprefillworker", "decode": f"{graph}-mockerdecodeworker"}
    assert await conn.state() == {"prefill": PoolState(1, 1), "decode": PoolState(1, 1)}
    await conn.scale({"decode": 3})
    method, path, _, body = api.requests[-1]
    assert (method, path) == ("PATCH", f"/apis/apps/v1/namespaces/team/deployments/{graph}-mockerdecodeworker/scale")
    assert body == {"spec": {"replicas": 3}}
    assert (await conn.state())["decode"] == PoolState(3, 1)  # two new pods not ready yet
    api.set_ready(f"{graph}-mockerdecodeworker", 3)
    assert (await conn.state())["decode"] == PoolState(3, 3)


def test_render_lets_the_planner_read_and_scale_the_graph():
    objects, env = rendered_planner_graph()
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o)
    role = next(o for o in by_kind["Role"] if o["metadata"]["name"] == "mocker-disagg-planner-planner")
    # scaling (limited to the graph's pools where render names them: `planner_scaling.scale_targets`)
    assert any(r["resources"] == ["deployments/scale"] and "patch" in r["verbs"] for r in role["rules"])
    binding = next(o for o in by_kind["RoleBinding"] if o["roleRef"]["name"] == role["metadata"]["name"])
    planner = next(o for o in by_kind["Deployment"] if o["metadata"]["name"].endswith("-planner"))
    account = planner["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "team"}]
    assert any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == account for o in objects)
    assert env["DYN_PLANNER_DEPLOYMENT_SELECTOR"] == "nvidia.com/dynamo-graph-deployment-name=mocker-disagg-planner"
    names = {o["metadata"]["annotations"]["nvidia.com/dynamo-component-name"] for o in by_kind["Deployment"]}
    assert names == {"Frontend", "Planner", "MockerPrefillWorker", "MockerDecodeWorker"}


def test_a_graph_without_a_planner_gets_no_planner_rights():
    from dynamo.deploy.run import load_graphs
    from dynamo.deploy.render import render
    from tests.fixtures.procs import REPO

    objects = render(load_graphs(str(REPO / "examples/backends/mocker/deploy/disagg.yaml"))[0], "team")
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding", "ServiceAccount")]


@pytest.fixture
async def store(tmp_path):
    s = make_store("file", root=str(tmp_path / "kv"))
    await s.start()
    yield s
    await s.close()


async def test_virtual_connector_round_trip_and_stuck_decision_is_given_up(store):
    cfg = PlannerConfig(environment="virtual", model_name="m", namespace="ns", replica_ready_timeout_seconds=0.5,
                        mode="disagg")
    conn = make_connector(cfg, store=store)
    await conn.start()
    orch = VirtualOrchestrator(store, "ns")
    await conn.scale({"decode": 3})
    decision = await orch.next_decision(timeout=5)
    assert decision["num_decode_workers"] == 3 and decision["num_prefill_workers"] == 1
    assert (await conn.state())["decode"] == PoolState(3, 1)  # not acknowledged yet
    await orch.ack(decision["decision_id"])
    assert (await conn.state())["decode"] == PoolState(3, 3)

    # A decision nobody applies: the planner gives up after the timeout instead of waiting forever.
    planner = Planner(cfg, conn, FpmCollector(store, cfg))
    await planner._apply("load", [Decision("decode", 3, 4, "test")], await conn.state())
    await planner._state()
    await asyncio.sleep(0.6)
    state = await planner._state()
    assert state["decode"].desired == 3  # set back to what is running
    latest = await orch.next_decision(timeout=5)  # 4 was asked, then withdrawn: 3 again
    assert latest["num_decode_workers"] == 3 and latest["decision_id"] == decision["decision_id"] + 2
    assert planner.metrics.start_timeouts.labels("decode")._value.get() == 1
