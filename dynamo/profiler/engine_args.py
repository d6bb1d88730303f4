"""Each engine's command line for a worker of the profiler's DGD, in that engine's own flags (each
engine's parser refuses the others'), as Dynamo's templates and AIConfigurator's generator write them:
the picked parallelism, batch limits and disaggregation role; the mocker replays the profile data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynamo.profiler.dgdr import Request

if TYPE_CHECKING:
    from dynamo.profiler.dgd import WorkerChoice

VLLM_KV_TRANSFER = '{"kv_connector":"NixlConnector","kv_role":"kv_both"}'


def _mocker_args(req: Request, w: WorkerChoice, model: str, profile_dir: str | None) -> list[str]:
    args = ["--model-path", model, "--model-name", req.spec.model, "--disaggregation-mode", w.role,
            "--speedup-ratio", "1.0"]
    if w.max_num_seqs:
        args += ["--max-num-seqs", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(w.max_num_batched_tokens)]
    # the mocker replays the profiled (or AIConfigurator-estimated) timings the profiler judged the SLA by
    return args + (["--planner-profile-data", profile_dir] if profile_dir else [])


def _served_name(req: Request, model: str) -> list[str]:
    return ["--served-model-name", req.spec.model] if model != req.spec.model else []


def _trust_remote_code(req: Request) -> bool:
    return bool(req.spec.overrides and req.spec.overrides.trustRemoteCode)


def _vllm_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    args = ["--model", model, *_served_name(req, model), "--tensor-parallel-size", str(w.tp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args += ["--data-parallel-size", str(w.dp)]
    if w.max_num_seqs:
        args += ["--max-num-seqs", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-batched-tokens", str(w.max_num_batched_tokens)]
    if w.role != "agg":
        args += ["--disaggregation-mode", w.role, "--kv-transfer-config", VLLM_KV_TRANSFER]
    return args + (["--trust-remote-code"] if _trust_remote_code(req) else [])


def _sglang_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    """SGLang's own ServerArgs, as Dynamo's sglang templates and AIConfigurator's generator write them.
    Attention data parallelism is SGLang's `--dp-size` inside a `--tp` that spans the engine's GPUs."""
    args = ["--model-path", model, *_served_name(req, model), "--tp", str(w.tp * w.dp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args += ["--dp-size", str(w.dp), "--enable-dp-attention"]
    if w.moe_ep and w.moe_ep > 1:
        args += ["--ep-size", str(w.moe_ep)]
    if w.max_num_seqs:
        args += ["--max-running-requests", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--chunked-prefill-size", str(w.max_num_batched_tokens)]
    if w.role != "agg":
        args += ["--disaggregation-mode", w.role, "--disaggregation-transfer-backend", "nixl"]
    return args + (["--trust-remote-code"] if _trust_remote_code(req) else [])


def _trtllm_args(req: Request, w: WorkerChoice, model: str) -> list[str]:
    """Dynamo's TRT-LLM worker flags (it owns the engine config), as AIConfigurator's generator writes
    them; what has no flag goes as `--trtllm.<key>` (Dynamo's profiler does the same)."""
    args = ["--model-path", model, *_served_name(req, model), "--tensor-parallel-size", str(w.tp * w.dp)]
    if w.pp > 1:
        args += ["--pipeline-parallel-size", str(w.pp)]
    if w.dp > 1:
        args.append("--enable-attention-dp")
    if w.moe_ep and w.moe_ep > 1:
        args += ["--expert-parallel-size", str(w.moe_ep)]
    if w.max_num_seqs:
        args += ["--max-batch-size", str(w.max_num_seqs)]
    if w.max_num_batched_tokens:
        args += ["--max-num-tokens", str(w.max_num_batched_tokens)]
    if w.role != "agg":  # the KV moves through TRT-LLM's cache transceiver, which a context server needs
        args += ["--disaggregation-mode", w.role, "--trtllm.cache_transceiver_config.backend", "DEFAULT"]
    if w.role == "prefill":  # to run context-only (TRT-LLM's disaggregated serving guide)
        args += ["--trtllm.disable_overlap_scheduler", "true"]
    return args + (["--trtllm.trust_remote_code", "true"] if _trust_remote_code(req) else [])


_ENGINE_ARGS = {"vllm": _vllm_args, "sglang": _sglang_args, "trtllm": _trtllm_args}


def worker_args(req: Request, backend: str, w: WorkerChoice, model: str, profile_dir: str | None) -> list[str]:
    """The worker's arguments (`profile_dir`: where a mocker finds the profile data to replay, if any)."""
    if backend == "mocker":
        return _mocker_args(req, w, model, profile_dir)
    return _ENGINE_ARGS[backend](req, w, model)

