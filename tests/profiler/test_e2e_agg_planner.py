"""`dynamo.deploy run final_config.yaml` of an aggregated mocker graph with a planner that scales it: the worker
the profiler typed `decode` is the pool the running Planner finds (through `run`'s control endpoint, which
reports it as `subComponentType: decode`), and scales it: a replica added there is the planner's to decide on."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
import yaml

from dynamo.planner.config import convert
from dynamo.planner.connectors.local import LocalConnector
from tests.deploy.helpers import DeployRun
from tests.fixtures.procs import wait_until
from tests.profiler.helpers import comps, graph
from tests.profiler.test_profile_data_mount import AGG, by_name, rapid_mocker
from tests.profiler.test_profile_data_mount import request as mocker_request

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def test_run_hands_the_aggregated_worker_to_the_planner_as_its_decode_pool(tmp_path, monkeypatch, tiny_model):
    planner = {"optimization_target": "sla", "load_adjustment_interval_seconds": 1}  # not advisory: it scales
    final, _ = rapid_mocker(tmp_path, monkeypatch, mocker_request(planner), AGG)
    docs = list(yaml.safe_load_all(final.read_text()))
    assert comps(graph(docs))["MockerWorker"]["type"] == "decode"
    config = json.loads(by_name(docs, "planner-config-")["data"]["planner_config.json"])
    run = DeployRun(final, tmp_path, "--model", str(tiny_model))
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1, "Planner": 1}, timeout=150)
        assert run.status()["components"]["MockerWorker"]["subComponentType"] == "decode"
        wait_until(lambda: "pools {'decode': 'MockerWorker'}" in run.log_path.read_text(errors="replace"), 90,
                   "the running planner finds the aggregated worker as its decode pool")

        async def scale() -> dict:
            conn = LocalConnector(convert({**config, "environment": "local"}), url=run.control)
            try:
                await conn.start()
                assert conn.components == {"decode": "MockerWorker"}
                await conn.scale({"decode": 2})
                return await conn.state()
            finally:
                await conn.close()

        assert asyncio.run(scale())["decode"].desired == 2
        # the running planner sees its decode pool at 2 now (idle, it takes one back: `decode 2 -> 1 (applied)`,
        # which `run` logs as `scale MockerWorker to 1 replica(s)`)
        decided = re.compile(r"planner decision \[load\] decode 2 -> (\d+) \((\w+)\)")
        wait_until(lambda: decided.search(run.log_path.read_text(errors="replace")), 90,
                   "the running planner's decision on its decode pool of 2")
        log = run.log_path.read_text(errors="replace")
        target, outcome = decided.search(log).groups()
        if outcome == "applied":
            wait_until(lambda: f"scale MockerWorker to {target} replica(s)" in run.log_path.read_text(
                errors="replace"), 30, "run applies the planner's decision to the aggregated worker")
    finally:
        assert run.stop() == 0
    assert run.survivors() == []
