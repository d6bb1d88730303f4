"""What the generated DGD runs and what its status promises: the request's `spec.image` reaches the DGD's
containers (one of Dynamo's images is read as Dynamo's profiler reads it: the backend runtime and planner
images are derived from it), and the `expected` figures describe the deployment generated, not
AIConfigurator's whole pick (the audit's 1P1D planner graph promised 3P5D's 233 req/s and concurrency 720)."""

from __future__ import annotations

import pytest

from dynamo.profiler import dgdr
from dynamo.profiler.dgd import IMAGE, Choice, WorkerChoice, build_dgd, final_documents
from dynamo.profiler.rapid import choice_from_rows
from tests.profiler.helpers import comps, main
from tests.profiler.test_dgdr import write_and_validate

PLANNER = {"optimization_target": "sla"}
# AIConfigurator's best disagg row for Qwen3-0.6B on h100_sxm, ISL 3000 / OSL 150, 8 GPUs (the audit's run)
AUDIT_ROW = {"concurrency": "720", "request_rate": "233.197", "(p)bs": "1", "(p)workers": "3", "(d)bs": "144",
             "(d)workers": "5", "ttft": "18.65", "tpot": "19.064", "request_latency": "2859.186",
             "tokens/s": "34979.55", "tokens/s/gpu": "4372.444", "tokens/s/user": "52.455", "num_total_gpus": "8",
             "(p)tp": "1", "(p)pp": "1", "(p)dp": "1", "(d)tp": "1", "(d)pp": "1", "(d)dp": "1"}


def request(**spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r1"}, "spec": {"model": "Qwen/Qwen3-0.6B", "backend": "vllm", **spec}})


def images_of(dgd: dict) -> dict[str, str]:
    return {name: main(comp)["image"] for name, comp in comps(dgd).items()}


DISAGG = Choice("disagg", [WorkerChoice("prefill"), WorkerChoice("decode")], "aiconfigurator")


@pytest.mark.parametrize("image, mocker, want, planner", [
    (None, False, IMAGE, IMAGE),
    ("registry.example/dynamo-serve-cuda:0.2.0", False, "registry.example/dynamo-serve-cuda:0.2.0",
     "registry.example/dynamo-serve-cuda:0.2.0"),
    # Dynamo's profiling image: workers (and frontend) get the backend runtime, the planner dynamo-planner
    ("nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1", False, "nvcr.io/nvidia/ai-dynamo/vllm-runtime:1.6.1",
     "nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1"),
    ("nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1", True, "nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1",
     "nvcr.io/nvidia/ai-dynamo/dynamo-planner:1.6.1"),
], ids=["ours", "custom", "dynamo", "dynamo-mocker"])
def test_the_requests_image_runs_the_graph(tmp_path, image, mocker, want, planner):
    spec = {"features": {"planner": PLANNER, "mocker": {"enabled": mocker}}, **({"image": image} if image else {})}
    dgd = build_dgd(request(**spec), DISAGG)
    got = images_of(dgd)
    assert got.pop("Planner") == planner
    assert set(got.values()) == {want}, got
    write_and_validate(tmp_path, final_documents(request(**spec), DISAGG))


def test_expected_figures_describe_the_planners_one_per_pool_graph():
    choice = choice_from_rows(request(features={"planner": PLANNER}, hardware={"totalGpus": 8}),
                              {"disagg": [AUDIT_ROW]})
    assert [(w.role, w.replicas) for w in choice.workers] == [("prefill", 1), ("decode", 1)]
    exp = choice.expected
    # 1 of 3 prefill and 1 of 5 decode workers: decode is the scarcer pool, a fifth of the rate
    assert exp["request_rate"] == pytest.approx(233.197 / 5)
    assert exp["concurrency"] == pytest.approx(144)  # one decode worker's batch
    assert exp["thpt_per_gpu"] == pytest.approx(34979.55 / 5 / 2)  # over this graph's 2 GPUs
    assert (exp["ttft_ms"], exp["itl_ms"], exp["tokens_per_s_per_user"]) == (18.65, 19.064, 52.455)
    note = next(n for n in choice.notes if n.startswith("expected figures are this DGD's"))
    assert "1xprefill TP1+1xdecode TP1, 2 GPU(s)" in note and "3xprefill TP1+5xdecode TP1 on 8 GPU(s)" in note
    assert "request_rate 233.2, concurrency 720" in note


def test_expected_figures_scale_with_the_budget_filled_and_stay_when_the_pick_is_deployed_as_is():
    half = {**AUDIT_ROW, "(p)workers": "1", "(d)workers": "1", "num_total_gpus": "2", "concurrency": "144",
            "request_rate": "46.6", "tokens/s": "6990", "tokens/s/gpu": "3495"}
    filled = choice_from_rows(request(hardware={"totalGpus": 8}), {"disagg": [half]})
    assert [w.replicas for w in filled.workers] == [4, 4]
    assert filled.expected["request_rate"] == pytest.approx(4 * 46.6)
    assert filled.expected["concurrency"] == pytest.approx(4 * 144)
    assert filled.expected["thpt_per_gpu"] == pytest.approx(3495)
    as_is = choice_from_rows(request(hardware={"totalGpus": 8}), {"disagg": [AUDIT_ROW]})
    assert [w.replicas for w in as_is.workers] == [3, 5]
    assert as_is.expected["request_rate"] == 233.197 and as_is.expected["concurrency"] == 720
    assert not any(n.startswith("expected figures") for n in as_is.notes)
