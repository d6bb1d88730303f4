"""The GlobalPlanner under `python -m dynamo.deploy run`: a file of three graphs (a control graph with the
GlobalPlanner holding a budget of 3 GPUs, and two mocker graphs of one 1-GPU worker each) runs as one
deployment; planners in `environment: global-planner` read their graph through its control endpoint and
send decisions to the GlobalPlanner, which budgets every graph of the file and scales them through their
control endpoints: within the budget applied, past it rejected, a give-back lets the other graph grow."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
import yaml

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import make_connector
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime import records
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.records import EndpointId
from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import http_get, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def graph(name: str, services: dict) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": name},
            "spec": {"services": services}}


def container(module: str, *args: str) -> dict:
    return {"mainContainer": {"image": "img:1", "command": ["python3", "-m", module], "args": list(args)}}


MOCKER = {"componentType": "worker", "subComponentType": "decode", "replicas": 1,
          "resources": {"limits": {"gpu": "1"}},
          "extraPodSpec": container("dynamo.mocker", "--model-path", "/models/tiny", "--model-name", "tiny",
                                    "--is-decode-worker")}
FILE = [graph("gp-ctrl", {"GlobalPlanner": {"componentType": "planner", "replicas": 1, "extraPodSpec": container(
            "dynamo.global_planner", "--max-total-gpus", "3", "--managed-namespaces", "demo-gp-a", "demo-gp-b")}}),
        graph("gp-a", {"MockerWorker": MOCKER}), graph("gp-b", {"MockerWorker": MOCKER})]


def replicas(url: str) -> int:
    return json.loads(http_get(url + "/status")[1])["services"]["MockerWorker"]


async def test_the_global_planner_budgets_and_scales_the_files_graphs(tmp_path, tiny_model):
    path = tmp_path / "graphs.yaml"
    path.write_text(yaml.safe_dump_all(FILE))
    run = DeployRun(path, tmp_path, "--namespace", "demo", "--model", str(tiny_model), "--no-status")
    rt = None
    try:
        wait_until(lambda: "GlobalPlanner: under `dynamo.deploy run`" in run.log() or run.popen.poll() is not None,
                   60, "the GlobalPlanner up")
        text = run.log_path.read_text()
        controls = dict(re.findall(r"dynamo\.deploy: running (\S+) \(.*?\); control (\S+);", text))
        state = re.search(r"; state (\S+);", text).group(1)
        store = make_store("file", root=f"{state}/kv")
        await store.start()
        rt = DistributedRuntime(store, "demo-gp-a")
        # its log line comes before its endpoint is in discovery: wait for the endpoint itself
        gp = records.endpoint_prefix(records.INSTANCES, EndpointId("demo-gp-ctrl", "GlobalPlanner", "scale_request"))
        deadline = time.monotonic() + 60
        while not await store.get_prefix(gp):
            assert time.monotonic() < deadline, f"the GlobalPlanner's endpoint never registered:\n{run.log()}"
            await asyncio.sleep(0.2)
        planners = {}
        for name in ("gp-a", "gp-b"):
            cfg = PlannerConfig(environment="global-planner", global_planner_namespace="demo-gp-ctrl",
                                namespace=f"demo-{name}", dgd_name=name, kube_namespace="demo", mode="decode",
                                control_url=controls[name])
            planners[name] = make_connector(cfg, runtime=rt)
            await planners[name].start()
        await planners["gp-a"].scale({"decode": 2})  # 3 of 3 GPUs
        assert replicas(controls["gp-a"]) == 2
        await planners["gp-b"].scale({"decode": 2})  # 4 of 3: rejected, the planner goes on
        assert replicas(controls["gp-b"]) == 1
        assert "GPU budget exceeded: request would use 4 total GPUs, max allowed is 3" in run.log()
        await planners["gp-a"].scale({"decode": 1})
        await planners["gp-b"].scale({"decode": 2})
        assert replicas(controls["gp-b"]) == 2
        wait_until(lambda: sum(r["state"] == "ready" for r in json.loads(
            http_get(controls["gp-b"] + "/status")[1])["replicas"]) == 2, 60, "gp-b's second worker ready")
        for planner in planners.values():
            await planner.close()
    finally:
        if rt is not None:
            await rt.shutdown()
        code = run.stop()
    assert code == 0, run.log()
