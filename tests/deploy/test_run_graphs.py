"""`python -m dynamo.deploy run` on a file of several graphs, NVIDIA Dynamo's hierarchical layout
(examples/global_router/hierarchical_mocker.yaml): a control graph (frontend + global router, its plan
mounted from the file's ConfigMap) and three pool graphs, each in its own namespace, one discovery store;
requests land in the pool their TTFT target calls for; each graph has its own control endpoint; the file
stops as a whole, leaving no process behind."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import REPO, http_get, metric_value, wait_until

EXAMPLE = REPO / "examples/global_router/hierarchical_mocker.yaml"
MODEL = "Qwen/Qwen3-0.6B"  # the manifest's served name, kept when --model swaps in the local files
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def controls(run: DeployRun) -> dict[str, str]:
    return dict(re.findall(r"dynamo\.deploy: running (\S+) \(.*?\); control (\S+);", run.log_path.read_text()))


def routed(gr_port: int, kind: str, pool: str) -> float:
    text = http_get(f"http://127.0.0.1:{gr_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_global_router_requests_total", {"type": kind, "pool_namespace": pool}) or 0.0


def test_a_file_of_graphs_runs_as_one_deployment(tmp_path, tiny_model):
    run = DeployRun(EXAMPLE, tmp_path, "--namespace", "demo", "--model", str(tiny_model), "--no-status")
    try:
        wait_until(lambda: len(controls(run)) == 4 or run.popen.poll() is not None, 60, "four graphs running")
        assert run.popen.poll() is None, run.log()
        wait_until(lambda: any(m["id"] == MODEL for m in json.loads(
            http_get(f"http://127.0.0.1:{run.port}/v1/models")[1])["data"]), 120, "the model behind the global router")
        status = {name: json.loads(http_get(url + "/status")[1]) for name, url in controls(run).items()}
        assert status["gr-prefill-bulk"]["services"] == {"LocalRouter": 1, "MockerPrefill": 2}
        (gr,) = [r for r in status["gr-ctrl"]["replicas"] if r["service"] == "GlobalRouter"]
        for target, pool in ((60, "demo-gr-prefill-fast"), (1900, "demo-gr-prefill-bulk")):
            before = routed(gr["system_port"], "prefill", pool)
            resp = httpx.post(f"http://127.0.0.1:{run.port}/v1/chat/completions", timeout=60, json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                "nvext": {"router": {"ttft_target": target}}})
            assert resp.status_code == 200, resp.text
            assert routed(gr["system_port"], "prefill", pool) == before + 1
        assert routed(gr["system_port"], "decode", "demo-gr-decode") == 2
        # each graph's replicas tagged with its name (the whole log: its tail is the routers' chatter)
        assert "[gr-decode/LocalRouter-0]" in run.log_path.read_text(errors="replace")
        for data in status.values():
            run.seen_pids |= {r["pid"] for r in data["replicas"] if r["pid"]}
    finally:
        code = run.stop()
    assert code == 0, run.log()
    assert run.survivors() == []


PLANNER_EXAMPLE = REPO / "examples/global_router/hierarchical_planner_mocker.yaml"


def test_the_hierarchical_planner_scales_a_pool_through_the_global_planner(tmp_path, tiny_model):
    """examples/global_router/hierarchical_planner_mocker.yaml: the idle decode pool (2 replicas, minimum 1)
    is scaled down by its planner (environment: global-planner), through the GlobalPlanner, which applies it
    to the pool's graph through its control endpoint; requests are served throughout."""
    run = DeployRun(PLANNER_EXAMPLE, tmp_path, "--namespace", "demo", "--model", str(tiny_model), "--no-status")
    try:
        wait_until(lambda: len(controls(run)) == 3 or run.popen.poll() is not None, 60, "three graphs running")
        assert run.popen.poll() is None, run.log()
        decode = controls(run)["hp-decode"]
        wait_until(lambda: any(m["id"] == MODEL for m in json.loads(
            http_get(f"http://127.0.0.1:{run.port}/v1/models")[1])["data"]), 120, "the model behind the global router")
        resp = httpx.post(f"http://127.0.0.1:{run.port}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
        assert resp.status_code == 200, resp.text
        wait_until(lambda: json.loads(http_get(decode + "/status")[1])["services"]["MockerDecode"] == 1, 120,
                   "the idle decode pool scaled down to its minimum")
        # the replicas' output reaches the run's log through pipes: it may lag the status the test saw change
        wait_until(lambda: "scaled DGD demo/hp-decode" in run.log_path.read_text(), 30, "the scale in the log")
        text = run.log_path.read_text()
        assert "GlobalPlanner: under `dynamo.deploy run`" in text
        assert "GPU budget check passed" in text, text[-3000:]
        resp = httpx.post(f"http://127.0.0.1:{run.port}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": [{"role": "user", "content": "again"}], "max_tokens": 4})
        assert resp.status_code == 200, resp.text
        for url in controls(run).values():
            run.seen_pids |= {r["pid"] for r in json.loads(http_get(url + "/status")[1])["replicas"] if r["pid"]}
    finally:
        code = run.stop()
    assert code == 0, run.log()
    assert run.survivors() == []
