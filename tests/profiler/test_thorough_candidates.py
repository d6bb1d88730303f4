"""A thorough candidate is measured as deployed: one prefill and one decode engine at the candidate's
TP, with no Planner rescaling them under the sweep (the audit's candidates ran the request's Planner),
whatever the request's overrides say about replicas; the final DGD keeps the Planner. With
`--mocker-speedup-ratio`, only the decode sweep runs faster: prefill TTFT is measured in real time."""

from __future__ import annotations

import yaml

from dynamo.deploy.validate import validate_file
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd
from dynamo.profiler.thorough import SweepOptions, _append, candidate_dgd, candidate_runs
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


def test_with_a_speedup_ratio_prefill_is_measured_in_real_time_and_only_decode_runs_faster():
    # A mocker's ratio divides its engine time, not the per-request time around it (HTTP, frontend, the
    # disagg hand-off): a TTFT measured at ratio 10 and multiplied back carried that overhead x10 (QA: 94 ms
    # for 32 ms at ISL 100). Prefill runs at ratio 1 in a deployment of its own; decode ITL scales cleanly.
    mocker, opts = request(), SweepOptions(speedup_ratio=10.0)
    runs = candidate_runs(mocker, opts)
    assert runs == [(("prefill",), 1.0), (("decode",), 10.0)]
    for (_, ratio), want in zip(runs, ("1.0", "10.0")):
        for svc in ("MockerPrefillWorker", "MockerDecodeWorker"):
            args = _append(mocker, opts, ratio)[svc]
            assert args[args.index("--speedup-ratio") + 1] == want
    assert candidate_runs(mocker, SweepOptions()) == [(("prefill", "decode"), 1.0)]  # one deployment, as before
    real = request(features={})  # a real engine ignores the ratio: nothing is scaled, no flag is added
    assert candidate_runs(real, opts) == [(("prefill", "decode"), 1.0)] and _append(real, opts, 1.0) == {}
