"""A thorough candidate is measured as deployed: one prefill and one decode engine at the candidate's
TP, with no Planner rescaling them under the sweep (the audit's candidates ran the request's Planner),
whatever the request's overrides say about replicas; the final DGD keeps the Planner."""

from __future__ import annotations

import yaml

from dynamo.deploy.validate import validate_file
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd
from dynamo.profiler.thorough import candidate_dgd
from tests.profiler.helpers import comps, main

PLANNER = {"mode": "disagg", "optimization_target": "latency", "load_adjustment_interval_seconds": 2}


def request(**spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "cand"},
                       "spec": {"model": "tiny-llama", "backend": "vllm", "searchStrategy": "thorough",
                                "features": {"mocker": {"enabled": True}, "planner": PLANNER}, **spec}})


def test_a_candidate_runs_without_the_planner_at_one_engine_per_role(tmp_path):
    # an override that scales decode and tunes the planner still yields a fixed 1 + 1 candidate
    over = {"spec": {"services": {"decode": {"replicas": 3}, "planner": {"envs": [{"name": "X", "value": "1"}]}}}}
    req = request(overrides={"dgd": over})
    dgd = candidate_dgd(req, 2)
    services = comps(dgd)
    assert list(services) == ["Frontend", "MockerPrefillWorker", "MockerDecodeWorker"]
    assert all(s["type"] != "planner" for s in services.values())
    assert [services[n]["replicas"] for n in ("MockerPrefillWorker", "MockerDecodeWorker")] == [1, 1]
    assert all("scalingAdapter" not in s for s in services.values())  # no planner scales a candidate
    assert dgd["metadata"]["name"].endswith("-tp2")
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml.safe_dump(dgd))
    assert validate_file(path).ok

    # the DGD handed back for the same request keeps its Planner
    final = build_dgd(req, Choice("disagg", [WorkerChoice("prefill", 2), WorkerChoice("decode", 2)], "measured"))
    assert comps(final)["Planner"]["type"] == "planner"
    assert {"name": "X", "value": "1"} in main(comps(final)["Planner"])["env"]
    assert comps(final)["MockerDecodeWorker"]["replicas"] == 3
    assert comps(final)["MockerDecodeWorker"]["scalingAdapter"] == {"enabled": True}
