"""Mocker configuration: NVIDIA Dynamo's `python -m dynamo.mocker` flags and defaults.

`MockerArgs` is the single source of every mocker setting; flags and their `DYN_*`
environment twins are generated from it by `dynamo.runtime.config`. Values that
depend on the model (`--kv-bytes-per-token`, `--context-length`) stay None until
`resolved()` fills them from the model's `config.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from dynamo.llm.media import MediaSettings
from dynamo.runtime.config import setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting
from dynamo.worker.engine_args import (ModelCardArgs, check_endpoint, endpoint_setting, migration_limit_setting,
                                      namespace_worker_suffix_setting, worker_namespace)
from dynamo.worker.hub_cache import cached_snapshot, is_repo_id
from dynamo.worker.model_files import local_model_dir
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)

MODES = tuple(r.value for r in WorkerRole)  # the flag's own spellings (aliases aside)
# Fallbacks when the model has no readable config.json (Llama-3-8B-like shape).
FALLBACK_CONTEXT_LENGTH = 8192
FALLBACK_KV_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2


@dataclass
class MockerArgs(ModelCardArgs, MediaSettings, DumpConfigTo):
    """GPU-less engine emulator with vLLM-style flags (NVIDIA Dynamo mocker)."""

    model_path: str | None = setting(None, "Model directory or HF id (tokenizer and config.json source)")
    model_name: str | None = setting(None, "Served model name (default: derived from --model-path)")
    endpoint: str | None = endpoint_setting()
    num_gpu_blocks_override: int = setting(16384, "KV cache capacity in blocks")
    block_size: int = setting(64, "Tokens per KV block")
    max_num_seqs: int = setting(256, "Maximum running sequences per step")
    max_num_batched_tokens: int = setting(8192, "Per-step token budget (prefill chunks + decode tokens)")
    enable_prefix_caching: bool = setting(True, "Reuse cached prompt blocks across requests")
    enable_chunked_prefill: bool = setting(True, "Split long prompts over several steps")
    watermark: float = setting(0.0, "Admit only while active blocks <= (1 - watermark) x capacity (default: none, "
                                    "as vLLM 0.32's scheduler)")
    speedup_ratio: float = setting(1.0, "Simulated durations are divided by this; 0 means no delays")
    decode_speedup_ratio: float = setting(1.0, "Decode steps are further divided by this (speculative decoding "
                                               "speeds decode, not prefill)")
    data_parallel_size: int = setting(1, "Data-parallel ranks (only 1 is simulated per engine for now)")
    startup_time: float | None = setting(None, "Simulated model load delay in seconds")
    disaggregation_mode: str = setting("agg", "Worker role", choices=MODES)
    is_prefill_worker: bool = setting(False, "Legacy: same as --disaggregation-mode prefill")
    is_decode_worker: bool = setting(False, "Legacy: same as --disaggregation-mode decode")
    kv_transfer_bandwidth: float = setting(64.0, "Simulated KV transfer bandwidth in GB/s (disaggregation)")
    kv_bytes_per_token: int | None = setting(None, "KV bytes per token (default: derived from config.json)")
    num_host_blocks: int = setting(
        0, "A host-memory KV tier of this many blocks (vLLM's native CPU offload): device blocks are written "
        "through to it, a prompt's blocks found there are copied back instead of recomputed, and it publishes "
        "KV events of tier host_pinned (0: none; needs prefix caching)")
    host_offload_h2d_bandwidth_gbps: float = setting(
        25.0, "Host-to-device GB/s copying host-tier blocks back, timed in the step that admits the request "
        "(0: unlimited)")
    host_offload_d2h_bandwidth_gbps: float = setting(
        25.0, "Device-to-host GB/s of the write-through (asynchronous in vLLM, so it times nothing here; "
        "accepted for Dynamo's flag)")
    context_length: int | None = setting(None, "Max context length (default: config.json max_position_embeddings)",
                                         flag=["--context-length", "--max-model-len"])
    enable_lora: bool = setting(False, "Accept LoRA adapters at runtime (simulated; /v1/loras on the system port)")
    max_loras: int = setting(1, "LoRA adapters served in one batch (vLLM's --max-loras)")
    enable_multimodal: bool = setting(False, "Read the images of chat requests as a vision model's worker does "
                                             "(fetched and decoded within the --mm-* limits, then simulated as text)")
    max_lora_rank: int = setting(16, "Largest LoRA rank accepted (vLLM's --max-lora-rank)")
    lora_load_time: float = setting(0.0, "Simulated seconds a LoRA adapter takes to load")
    namespace: str = setting("dynamo", "Dynamo namespace", env="DYN_NAMESPACE")
    namespace_worker_suffix: str | None = namespace_worker_suffix_setting()
    discovery_backend: str = discovery_backend_setting()
    event_plane: str | None = event_plane_setting()
    migration_limit: int = migration_limit_setting()
    planner_profile_data: str | None = setting(
        None, "Profiler results (dir with selected_*_interpolation/raw_data.npz or *_raw_data.json, or a "
        "mocker .npz): step timings follow the measured TTFT/ITL instead of the polynomial model")
    replay_file: str | None = setting(None, "Testing: JSON object {prompt substring: output text}; a request whose "
                                            "decoded prompt contains a key gets that text's tokens, then EOS")
    structured_output: bool = setting(False, "Testing: say in the card that this engine holds its output to "
                                             "guided decoding, as vLLM does (the mocker does not: a --replay-file "
                                             "answer stands for what such an engine writes)")

    def validate(self) -> None:
        self.check_card_args()
        check_endpoint(self.endpoint)
        self.media_policy()  # ValueError for a limit that is not positive
        positive = ("num_gpu_blocks_override", "block_size", "max_num_seqs", "max_num_batched_tokens")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError(f"--watermark must be in [0, 1), got {self.watermark}")
        if self.speedup_ratio < 0:
            raise ValueError(f"--speedup-ratio must be >= 0, got {self.speedup_ratio}")
        if self.decode_speedup_ratio <= 0:
            raise ValueError(f"--decode-speedup-ratio must be > 0, got {self.decode_speedup_ratio}")
        if self.num_host_blocks < 0 or self.host_offload_h2d_bandwidth_gbps < 0 \
                or self.host_offload_d2h_bandwidth_gbps < 0:
            raise ValueError("--num-host-blocks and the host offload bandwidths must be >= 0")
        if self.num_host_blocks and not self.enable_prefix_caching:
            raise ValueError("--num-host-blocks needs prefix caching")
        if self.kv_transfer_bandwidth <= 0:
            raise ValueError(f"--kv-transfer-bandwidth must be > 0, got {self.kv_transfer_bandwidth}")
        if self.data_parallel_size < 1:
            raise ValueError(f"--data-parallel-size must be >= 1, got {self.data_parallel_size}")
        if self.disaggregation_mode not in MODES:
            raise ValueError(f"--disaggregation-mode must be one of {MODES}")
        self.mode  # noqa: B018  (raises ValueError on conflicting role flags)
        if self.planner_profile_data is not None and not os.path.exists(self.planner_profile_data):
            raise ValueError(f"--planner-profile-data {self.planner_profile_data}: no such file or directory")
        for name in ("kv_bytes_per_token", "context_length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")

    @property
    def mode(self) -> WorkerRole:
        """Effective role: the legacy booleans win over the default `agg`."""
        return WorkerRole.parse(self.disaggregation_mode, self.is_prefill_worker, self.is_decode_worker)

    @property
    def worker_namespace(self) -> str:
        """Where the worker registers when no --endpoint says otherwise (DYN_NAMESPACE_WORKER_SUFFIX applied)."""
        return worker_namespace(self.namespace, self.namespace_worker_suffix)

    def default_endpoint(self) -> str:
        return self.endpoint or f"dyn://{self.worker_namespace}.{self.mode.default_component}.generate"

    def resolved(self, model_config: dict[str, Any] | None = None) -> "MockerArgs":
        """Copy with `kv_bytes_per_token` / `context_length` filled from `model_config`
        (default: the config.json under `model_path`), falling back loudly."""
        cfg = read_model_config(self.model_path) if model_config is None else model_config
        kv_bytes = self.kv_bytes_per_token or kv_bytes_per_token_from_config(cfg)
        if kv_bytes is None:
            log.warning("cannot derive kv_bytes_per_token from config.json; using %d", FALLBACK_KV_BYTES_PER_TOKEN)
            kv_bytes = FALLBACK_KV_BYTES_PER_TOKEN
        context = self.context_length or context_length_from_config(cfg)
        if context is None:
            log.warning("no max_position_embeddings in config.json; context length %d", FALLBACK_CONTEXT_LENGTH)
            context = FALLBACK_CONTEXT_LENGTH
        return dataclasses.replace(self, kv_bytes_per_token=kv_bytes, context_length=context)


def resolve_model_dir(model_path: str | None) -> str:
    """The directory the mocker reads its tokenizer and config.json from.

    NVIDIA Dynamo's mocker takes "a model directory or a HuggingFace model ID" (its profiler's DGDs
    name ids): an id resolves in the local HF cache first, with no network (a machine without one
    still serves what it has cached), else its config and tokenizer files are fetched once, as
    Dynamo's mocker prefetches them. ValueError says what to do when neither works."""
    if not model_path:
        raise ValueError("--model-path is required (a model directory or a Hugging Face model id)")
    if os.path.isdir(model_path):
        return model_path
    if os.path.exists(model_path) or not is_repo_id(model_path):
        raise ValueError(f"--model-path {model_path}: neither a model directory nor a Hugging Face model id")
    cached = cached_snapshot(model_path)
    if cached:
        return cached
    try:
        return local_model_dir(model_path)  # config and tokenizer files only, never weights
    except Exception as exc:  # offline, unknown or gated repo: whatever huggingface_hub raised, one clear line
        from huggingface_hub import constants

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--model-path {model_path}: not in this machine's Hugging Face cache "
                         f"({constants.HF_HUB_CACHE}) and not downloadable ({reason}); run "
                         f"`huggingface-cli download {model_path}` or pass a model directory") from None


def read_model_config(model_path: str | None) -> dict[str, Any]:
    """The model's config.json as a dict, or {} when there is none to read."""
    if not model_path:
        return {}
    path = os.path.join(model_path, "config.json") if os.path.isdir(model_path) else model_path
    if not (os.path.isfile(path) and path.endswith(".json")):
        return {}
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        log.warning("unreadable model config %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def _text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    # Multimodal configs nest the language model's shape under text_config.
    inner = cfg.get("text_config")
    return {**cfg, **inner} if isinstance(inner, dict) else cfg


def kv_bytes_per_token_from_config(cfg: dict[str, Any], dtype_bytes: int = 2) -> int | None:
    """layers x 2 (K and V) x kv_heads x head_dim x dtype bytes; None if the shape is unknown."""
    cfg = _text_config(cfg)
    layers = cfg.get("num_hidden_layers")
    heads = cfg.get("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads") or heads
    head_dim = cfg.get("head_dim")
    if not head_dim and cfg.get("hidden_size") and heads:
        head_dim = cfg["hidden_size"] // heads
    if not (layers and kv_heads and head_dim):
        return None
    return int(layers) * 2 * int(kv_heads) * int(head_dim) * dtype_bytes


def context_length_from_config(cfg: dict[str, Any]) -> int | None:
    value = _text_config(cfg).get("max_position_embeddings")
    return int(value) if value else None
