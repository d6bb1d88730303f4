"""A DGD with a Planner component, run by `python -m dynamo.deploy run` with no hand wiring: the
disaggregated mocker graph of `examples/backends/mocker/deploy/disagg_planner.yaml` (planner config
written for Kubernetes: no `environment`, no control URL). `run` injects its control endpoint; the
planner maps `kubernetes` to its local connector, finds the prefill/decode pools by subComponentType,
scales up under a burst and back down after it, with a trickle running throughout. Zero requests
may fail, and no scale-up may be decided on FPMs from fewer engines than the pool has replicas (the
audit's decode 2 -> 3 on one engine's FPM while the new replica had not reported)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import REPO, http_get, metric_value, wait_until
from tests.planner.helpers import scale_ups_on_partial_fpms
from tests.planner.test_e2e_local import MODEL, Load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
EXAMPLE = REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"
POOLS = {"prefill": "MockerPrefillWorker", "decode": "MockerDecodeWorker"}


def test_planner_component_scales_its_graph_under_deploy_run(tmp_path: Path, tiny_model):
    run = DeployRun(EXAMPLE, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "Planner": 1, **{svc: 1 for svc in POOLS.values()}}, timeout=150)
        run.wait_workers(MODEL, 1)
        log = run.log_path.read_text
        wait_until(lambda: "local connector:" in log(), 60, "the planner's connector is up")
        assert "environment 'kubernetes' -> 'local'" in log()
        assert "pools {'prefill': 'MockerPrefillWorker', 'decode': 'MockerDecodeWorker'}" in log()

        # before any request the frontend exports the model's request series at 0 (Prometheus'
        # increase() then counts the first requests)
        _, body = http_get(f"http://127.0.0.1:{run.port}/metrics")
        labels = {"model": MODEL, "endpoint": "chat_completions", "request_type": "unary", "status": "success"}
        assert metric_value(body.decode(), "dynamo_frontend_requests_total", labels) == 0.0

        def desired() -> dict[str, int]:
            services = run.status()["services"]
            return {role: services[svc] for role, svc in POOLS.items()}

        trickle = Load(run.port, 1, 8, prompt_words=20)
        burst = Load(run.port, 12, 100)  # ~67% of a decode mocker's KV: well over the 40% up threshold
        wait_until(lambda: max(desired().values()) >= 2, 150, "the planner scales a pool up under load", interval=1)
        scaled = {role: n for role, n in desired().items() if n >= 2}
        run.wait_ready({POOLS[role]: n for role, n in desired().items()}, timeout=120)
        burst.stop()
        wait_until(lambda: desired() == {"prefill": 1, "decode": 1}, 150, "the planner scales back down", interval=1)
        run.wait_ready({svc: 1 for svc in POOLS.values()}, timeout=120)
        trickle.stop()
        assert burst.failures == [] and trickle.failures == [], (burst.failures[:3], trickle.failures[:3])
        assert burst.ok > 10 and trickle.ok > 3
        # the graph really ran disaggregated: its prefill worker's card matches, prefills went remote
        _, body = http_get(f"http://127.0.0.1:{run.port}/metrics")
        assert metric_value(body.decode(), "dynamo_frontend_remote_prefills_total", {"model": MODEL}) > 0
        assert "different model card" not in log()
        text = log()
        for role in scaled:  # each scaling went through the control endpoint, logged by the planner and `run`
            assert f"planner decision [load] {role} 1 -> 2 (applied)" in text, text[-4000:]
            assert re.search(rf"scale {POOLS[role]} to 2 replica\(s\)", text)
        assert "planner decision [load]" in text and re.search(r" 2 -> 1 \(applied\)", text)
        assert scale_ups_on_partial_fpms(text) == []
        (planner,) = run.replicas("Planner")
        assert planner["restarts"] == 0 and planner["state"] == "ready"
    finally:
        assert run.stop() == 0
    assert run.survivors() == []
