"""Each engine's workers get that engine's own flags (`dynamo.profiler.dgd`): SGLang's ServerArgs
(`--tp`, `--max-running-requests`, `--disaggregation-transfer-backend nixl`), Dynamo's TRT-LLM worker
flags (`--max-batch-size`, `--max-num-tokens`, `--trtllm.*` for what has no flag), vLLM's as before.
The DGD `dynamo.deploy validate` checks against the real parsers, agg and disagg picks alike (the
audit's rapid sglang/trtllm DGDs carried vLLM's `--max-num-seqs` and failed their own validation)."""

from __future__ import annotations

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd
from dynamo.profiler.rapid import choice_from_rows
from tests.profiler.helpers import comps, flag, main
from tests.profiler.test_dgdr import AGG_ROW, DISAGG_ROW

VLLM_ONLY = ("--max-num-seqs", "--max-num-batched-tokens", "--kv-transfer-config", "--model")


def request(backend: str, **spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "eng"}, "spec": {"model": "Qwen/Qwen3-0.6B", "backend": backend,
                                                             "hardware": {"gpuSku": "h200_sxm", "totalGpus": 8},
                                                             **spec}})


def workers(dgd: dict) -> dict[str, list[str]]:
    return {name: main(comp)["args"] for name, comp in comps(dgd).items() if comp["type"] in ("worker", "prefill",
                                                                                               "decode")}


def validates(tmp_path, dgd: dict) -> None:
    path = tmp_path / "dgd.yaml"
    path.write_text(yaml.safe_dump(dgd))
    report = validate_file(path)
    assert report.ok, report.lines()


@pytest.mark.parametrize("backend", ["sglang", "trtllm"])
@pytest.mark.parametrize("rows", [{"agg": [AGG_ROW]}, {"disagg": [DISAGG_ROW]}], ids=["agg", "disagg"])
def test_rapid_picks_for_sglang_and_trtllm_validate_with_their_own_flags(tmp_path, backend, rows):
    req = request(backend)
    dgd = build_dgd(req, choice_from_rows(req, rows))
    validates(tmp_path, dgd)
    for name, args in workers(dgd).items():
        assert not set(VLLM_ONLY) & set(args), (name, args)
        assert flag(args, "--model-path") == "Qwen/Qwen3-0.6B"
    if "agg" in rows:
        (args,) = workers(dgd).values()
        batch = "--max-running-requests" if backend == "sglang" else "--max-batch-size"
        assert flag(args, batch) == "32" and "--disaggregation-mode" not in args


def test_sglang_disagg_workers_use_sglangs_transfer_backend(tmp_path):
    req = request("sglang")
    dgd = build_dgd(req, choice_from_rows(req, {"disagg": [DISAGG_ROW]}))
    args = workers(dgd)
    pre, dec = args["SglangPrefillWorker"], args["SglangDecodeWorker"]
    assert (flag(pre, "--disaggregation-mode"), flag(dec, "--disaggregation-mode")) == ("prefill", "decode")
    assert flag(pre, "--disaggregation-transfer-backend") == flag(dec, "--disaggregation-transfer-backend") == "nixl"
    assert (flag(pre, "--tp"), flag(dec, "--tp")) == ("2", "4")
    assert (flag(pre, "--max-running-requests"), flag(dec, "--max-running-requests")) == ("1", "120")


def test_trtllm_disagg_workers_get_a_cache_transceiver_and_a_context_only_prefill(tmp_path):
    req = request("trtllm")
    dgd = build_dgd(req, choice_from_rows(req, {"disagg": [DISAGG_ROW]}))
    args = workers(dgd)
    pre, dec = args["TrtllmPrefillWorker"], args["TrtllmDecodeWorker"]
    assert (flag(pre, "--disaggregation-mode"), flag(dec, "--disaggregation-mode")) == ("prefill", "decode")
    for worker in (pre, dec):
        assert flag(worker, "--trtllm.cache_transceiver_config.backend") == "DEFAULT"
    assert flag(pre, "--trtllm.disable_overlap_scheduler") == "true"
    assert "--trtllm.disable_overlap_scheduler" not in dec
    assert (flag(pre, "--max-batch-size"), flag(dec, "--max-batch-size")) == ("1", "120")


@pytest.mark.parametrize("backend", ["sglang", "trtllm", "vllm"])
def test_attention_dp_expert_parallel_token_budget_and_remote_code(tmp_path, backend):
    """A MoE pick's attention DP and expert parallelism, a token budget, and trustRemoteCode, each in the
    engine's own words; the engine spans tp x dp GPUs per pipeline stage, as its resources say."""
    req = request(backend, overrides={"trustRemoteCode": True})
    w = WorkerChoice("decode", tp=2, dp=2, moe_ep=4, max_num_seqs=64, max_num_batched_tokens=4096)
    dgd = build_dgd(req, Choice("disagg", [WorkerChoice("prefill", 1), w], "aiconfigurator"))
    validates(tmp_path, dgd)
    name = next(n for n in workers(dgd) if "Decode" in n)
    args = workers(dgd)[name]
    assert main(comps(dgd)[name])["resources"]["limits"]["nvidia.com/gpu"] == "4"
    if backend == "sglang":
        assert (flag(args, "--tp"), flag(args, "--dp-size"), flag(args, "--ep-size")) == ("4", "2", "4")
        assert "--enable-dp-attention" in args and flag(args, "--chunked-prefill-size") == "4096"
        assert "--trust-remote-code" in args
    elif backend == "trtllm":
        assert (flag(args, "--tensor-parallel-size"), flag(args, "--expert-parallel-size")) == ("4", "4")
        assert "--enable-attention-dp" in args and flag(args, "--max-num-tokens") == "4096"
        assert flag(args, "--trtllm.trust_remote_code") == "true"
    else:
        assert (flag(args, "--max-num-seqs"), flag(args, "--max-num-batched-tokens")) == ("64", "4096")
        assert "--trust-remote-code" in args
