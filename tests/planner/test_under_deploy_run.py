"""The operator contract, locally: what `dynamo.deploy run` hands a planner component (its control
endpoint, the Prometheus it was given) and how the planner reads it (`kubernetes` -> `local`, no
cluster-internal Prometheus, pools found by subComponentType / v1beta1 type)."""

from __future__ import annotations

import json
import logging

import pytest

from dynamo.planner.__main__ import prometheus_for
from dynamo.planner.config import DEFAULT_PROMETHEUS, PlannerArgs, PlannerConfig, load_config
from dynamo.planner.connectors.base import make_connector, resolve_pools
from dynamo.planner.observe import FpmCollector
from dynamo.planner.planner import Planner
from dynamo.planner.prometheus import PrometheusClient
from dynamo.runtime.discovery.base import make_store
from tests.deploy.test_plan_local import plans_for
from tests.fixtures.procs import REPO, free_port

EXAMPLE = REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"
CONTROL = "http://127.0.0.1:4321"


def args(**kw) -> PlannerArgs:
    return PlannerArgs(**{"prometheus_endpoint": DEFAULT_PROMETHEUS, **kw})


def test_run_injects_control_url_and_prometheus_into_planner_components_only(tmp_path):
    plans = plans_for(EXAMPLE, tmp_path, control_url=CONTROL)
    planner = plans["Planner"].launch(0).env
    assert planner["DYN_DEPLOY_CONTROL_URL"] == CONTROL
    assert planner["PROMETHEUS_ENDPOINT"] == ""  # none given: the planner runs on forward-pass metrics
    for name in ("Frontend", "MockerDecodeWorker", "MockerPrefillWorker"):
        assert "DYN_DEPLOY_CONTROL_URL" not in plans[name].launch(0).env
    given = plans_for(EXAMPLE, tmp_path, control_url=CONTROL, prometheus_endpoint="http://127.0.0.1:9090")
    assert given["Planner"].launch(0).env["PROMETHEUS_ENDPOINT"] == "http://127.0.0.1:9090"
    from_shell = plans_for(EXAMPLE, tmp_path, control_url=CONTROL,
                           environ={"PATH": "/usr/bin", "PROMETHEUS_ENDPOINT": "http://127.0.0.1:9091"})
    assert from_shell["Planner"].launch(0).env["PROMETHEUS_ENDPOINT"] == "http://127.0.0.1:9091"
    in_cluster = plans_for(EXAMPLE, tmp_path, control_url=CONTROL,
                           environ={"PATH": "/usr/bin", "PROMETHEUS_ENDPOINT": DEFAULT_PROMETHEUS})
    assert in_cluster["Planner"].launch(0).env["PROMETHEUS_ENDPOINT"] == ""


def test_kubernetes_environment_maps_to_local_under_deploy_run(caplog):
    caplog.set_level(logging.INFO, "dynamo.planner")
    cfg = load_config(json.dumps({"mode": "disagg"}), args(control_url=CONTROL))
    assert cfg.environment == "local" and cfg.control_url == CONTROL
    assert cfg.prometheus_endpoint is None  # the in-cluster default does not resolve here
    assert "environment 'kubernetes' -> 'local'" in caplog.text
    # outside `run` nothing changes: a cluster planner keeps its connector and Prometheus default
    plain = load_config(json.dumps({"mode": "disagg"}), args())
    assert plain.environment == "kubernetes" and plain.prometheus_endpoint == DEFAULT_PROMETHEUS
    # virtual stays virtual (an external orchestrator was asked for); local keeps its own URL
    virtual = load_config(json.dumps({"environment": "virtual", "model_name": "m"}), args(control_url=CONTROL))
    assert virtual.environment == "virtual"
    own = load_config(json.dumps({"environment": "local", "control_url": "http://127.0.0.1:1"}),
                      args(control_url=CONTROL))
    assert own.control_url == "http://127.0.0.1:1"


def test_prometheus_under_deploy_run(caplog):
    cluster = {"prometheus_endpoint": "http://prom.monitoring.svc:9090", "optimization_target": "sla"}
    cfg = load_config(json.dumps(cluster), args(control_url=CONTROL, prometheus_endpoint="http://127.0.0.1:9090"))
    assert cfg.prometheus_endpoint == "http://127.0.0.1:9090"
    local = {"prometheus_endpoint": "http://127.0.0.1:9999", "optimization_target": "sla"}
    assert load_config(json.dumps(local), args(control_url=CONTROL)).prometheus_endpoint == "http://127.0.0.1:9999"
    none = load_config(json.dumps(cluster), args(control_url=CONTROL))
    assert none.prometheus_endpoint is None
    caplog.set_level(logging.WARNING, "dynamo.planner")
    assert prometheus_for(none) is None
    assert caplog.text.count("no Prometheus configured") == 1
    assert none.enable_throughput_scaling is False and none.enable_load_scaling is True


@pytest.mark.parametrize("specs,mode,want", [
    ({"Frontend": {"componentType": "frontend"}, "Planner": {"componentType": "planner"},
      "P": {"componentType": "worker", "subComponentType": "prefill"},
      "D": {"componentType": "worker", "subComponentType": "decode"}}, "disagg", {"prefill": "P", "decode": "D"}),
    ({"frontend": {"type": "frontend"}, "planner": {"type": "planner"}, "pw": {"type": "prefill"},
      "dw": {"type": "decode"}}, "disagg", {"prefill": "pw", "decode": "dw"}),
    ({"Frontend": {"componentType": "frontend"}, "Planner": {"componentType": "planner"},
      "MockerWorker": {"componentType": "worker"}}, "agg", {"decode": "MockerWorker"}),
    ({"Frontend": {}, "VllmPrefillWorker": {}, "VllmDecodeWorker": {}}, "disagg",
     {"prefill": "VllmPrefillWorker", "decode": "VllmDecodeWorker"}),
])
def test_pools_found_by_component_type_then_name(specs, mode, want):
    assert resolve_pools(specs, PlannerConfig(mode=mode)) == want


def test_pools_ambiguous_or_missing_are_named():
    specs = {"A": {"componentType": "worker"}, "B": {"componentType": "worker"}}
    with pytest.raises(ValueError, match="set decode_component"):
        resolve_pools(specs, PlannerConfig(mode="agg"))
    assert resolve_pools(specs, PlannerConfig(mode="agg", decode_component="B")) == {"decode": "B"}


async def test_a_failing_tick_is_said_once_until_it_recovers(tmp_path, caplog):
    """A Prometheus that is down (here: a closed port) fails every throughput tick; the planner keeps
    running, counts each failure, and logs it once, not every tick."""
    store = make_store("file", root=str(tmp_path / "kv"))
    cfg = PlannerConfig(environment="virtual", model_name="m")
    planner = Planner(cfg, make_connector(cfg, store=store), FpmCollector(store, cfg))
    client = PrometheusClient(f"http://127.0.0.1:{free_port()}", timeout=5)
    up = False

    async def tick():
        if not up:
            await client.query("up")

    caplog.set_level(logging.DEBUG, "dynamo.planner")
    try:
        for _ in range(3):
            await planner._guarded("throughput", tick)
        up = True
        await planner._guarded("throughput", tick)
    finally:
        await client.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "tick failed" in r.message]
    assert len(warnings) == 1 and "Cannot connect" in warnings[0].message
    assert sum("tick failed" in r.message for r in caplog.records) == 3
    assert "planner throughput tick recovered" in caplog.text
    assert planner.metrics.tick_errors.labels("throughput")._value.get() == 3
