"""`python -m dynamo.trtllm` arguments: NVIDIA Dynamo's TensorRT-LLM worker flags.

Unlike vLLM and SGLang, Dynamo's TRT-LLM worker owns its engine flags (TRT-LLM's LLM API
has no CLI parser); the rest of the engine config comes from `--extra-engine-args` (a
YAML file of `LLM(...)` arguments) and `--override-engine-args` (a JSON dict applied
last), or in its stead any number of `--trtllm.<dotted.key> VALUE` flags (`dynamic_flags.py`).
`DynamoTrtllmArgs` is the single source of every flag and its `DYN_TRTLLM_*`
env twin, and needs no TensorRT-LLM to parse (so `dynamo.deploy validate` checks
trtllm manifests anywhere).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import yaml

from dynamo.runtime.compat_args import parse_with_compat
from dynamo.runtime.config import add_arguments, setting
from dynamo.trtllm.dynamic_flags import (
    DynamicFlagError,
    DynamicFlagParser,
    apply_overrides,
    merged_override_json,
    split_dynamic_flags,
)
from dynamo.worker.compat_flags import TRTLLM_FLAGS
from dynamo.worker.engine_args import (EngineWorkerArgs, check_endpoint, endpoint_types_setting, migration_limit_setting,
                                       migration_limit_warnings, parse_endpoint_types)
from dynamo.worker.role import MODE_CHOICES, WorkerRole

DEFAULT_MODEL = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
PROG = "python -m dynamo.trtllm"


def _t(default: Any, help: str, name: str, **kw: Any) -> Any:
    return setting(default, help, env=f"DYN_TRTLLM_{name}", **kw)


@dataclass
class DynamoTrtllmArgs(EngineWorkerArgs):
    """TensorRT-LLM engine worker: serves a model with TRT-LLM's LLM API behind a Dynamo frontend.
    Any LLM() argument may also be given as --trtllm.KEY[.SUBKEY...] VALUE (or =VALUE), e.g.
    --trtllm.kv_cache_config.free_gpu_memory_fraction 0.8: these flags replace --override-engine-args."""

    model: str = _t(DEFAULT_MODEL, "Model directory or HF id", "MODEL", flag=["--model", "--model-path"])
    served_model_name: str | None = _t(None, "Served model name (default: --model)", "SERVED_MODEL_NAME")
    tensor_parallel_size: int = _t(1, "Tensor-parallel size", "TENSOR_PARALLEL_SIZE")
    pipeline_parallel_size: int = _t(1, "Pipeline-parallel size", "PIPELINE_PARALLEL_SIZE")
    expert_parallel_size: int | None = _t(None, "MoE expert-parallel size", "EXPERT_PARALLEL_SIZE")
    enable_attention_dp: bool = _t(False, "Attention data parallelism", "ENABLE_ATTENTION_DP")
    max_batch_size: int = _t(2048, "Maximum requests in a batch", "MAX_BATCH_SIZE")
    max_num_tokens: int = _t(8192, "Maximum tokens in a batch", "MAX_NUM_TOKENS")
    max_seq_len: int | None = _t(None, "Maximum sequence length (default: the model's)", "MAX_SEQ_LEN")
    max_beam_width: int = _t(1, "Maximum beam width", "MAX_BEAM_WIDTH")
    kv_block_size: int = _t(32, "Tokens per KV block", "KV_BLOCK_SIZE")
    free_gpu_memory_fraction: float = _t(0.9, "GPU memory fraction for the KV cache", "FREE_GPU_MEMORY_FRACTION")
    extra_engine_args: str | None = _t(None, "YAML file of extra LLM() arguments", "EXTRA_ENGINE_ARGS")
    override_engine_args: str | None = _t(None, "JSON dict of LLM() arguments applied last", "OVERRIDE_ENGINE_ARGS")
    gpus_per_node: int | None = _t(None, "GPUs per node (default: TensorRT-LLM infers it)", "GPUS_PER_NODE")
    revision: str | None = _t(None, "Hugging Face revision (branch, tag or commit) of the model", "REVISION")
    load_format: str = _t("auto", "Weight loading: auto, or dummy (random weights, for testing)", "LOAD_FORMAT",
                          choices=["auto", "dummy"])
    publish_metrics: bool = _t(False, "TensorRT-LLM iteration statistics and its trtllm_* series on (the "
                               "worker's /metrics)", "PUBLISH_METRICS")
    publish_kv_events: bool = _t(False, "Publish KV events and engine stats (legacy: --publish-events-and-metrics)",
                                 "PUBLISH_KV_EVENTS", flag=["--publish-kv-events", "--publish-events-and-metrics"])
    disaggregation_mode: str = _t("agg", "Worker role: agg (pd, prefill_and_decode), prefill or decode",
                                  "DISAGGREGATION_MODE", choices=list(MODE_CHOICES) + ["encode"])
    modality: str = _t("text", "Input modality (only text is served by this worker)", "MODALITY",
                       choices=["text", "multimodal"])
    guided_decoding_backend: str | None = _t(None, "Guided decoding backend (xgrammar, llguidance)",
                                             "GUIDED_DECODING_BACKEND", choices=["xgrammar", "llguidance"])
    migration_limit: int = migration_limit_setting()
    engine_request_limit: int = setting(0, "Requests in flight beyond which new ones are refused (0: no limit)")
    endpoint_types: str = endpoint_types_setting()

    def validate(self) -> None:
        self.check_card_args()
        check_endpoint(self.endpoint)
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "max_batch_size", "max_num_tokens",
                     "max_beam_width", "kv_block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        if not 0 < self.free_gpu_memory_fraction <= 1:
            raise ValueError("--free-gpu-memory-fraction must be in (0, 1]")
        if self.disaggregation_mode == "encode":
            raise ValueError("--disaggregation-mode encode (multimodal encode workers) is not supported")
        if self.modality != "text":
            raise ValueError("--modality multimodal is not supported by this worker")
        if self.override_engine_args:
            override = json.loads(self.override_engine_args)
            if not isinstance(override, dict):
                raise ValueError("--override-engine-args must be a JSON object")
        self.role  # noqa: B018  (raises on an unknown role)

    @property
    def role(self) -> WorkerRole:
        return WorkerRole.parse(self.disaggregation_mode)

    @property
    def model_types(self) -> list[str]:
        return parse_endpoint_types(self.endpoint_types)

    def engine_kwargs(self) -> dict[str, Any]:
        """`LLM(...)` keyword arguments: flags, then the YAML file, then the JSON overrides (what the
        `--trtllm.*` flags become). `kv_cache_config` stays a dict here: the adapter builds TRT-LLM's
        KvCacheConfig."""
        kwargs: dict[str, Any] = {
            "model": self.model, "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size, "enable_attention_dp": self.enable_attention_dp,
            "max_batch_size": self.max_batch_size, "max_num_tokens": self.max_num_tokens,
            "max_beam_width": self.max_beam_width, "backend": "pytorch",
            "kv_cache_config": {"free_gpu_memory_fraction": self.free_gpu_memory_fraction,
                                "tokens_per_block": self.kv_block_size, "enable_block_reuse": True},
        }
        if self.expert_parallel_size is not None:
            kwargs["moe_expert_parallel_size"] = self.expert_parallel_size
        if self.max_seq_len is not None:
            kwargs["max_seq_len"] = self.max_seq_len
        if self.guided_decoding_backend:
            kwargs["guided_decoding_backend"] = self.guided_decoding_backend
        for name in ("gpus_per_node", "revision"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        if self.load_format != "auto":
            kwargs["load_format"] = self.load_format
        if self.publish_kv_events:  # TRT-LLM keeps events only with a buffer, stats only when asked
            kwargs["kv_cache_config"]["event_buffer_max_size"] = 1024
        if self.publish_kv_events or self.publish_metrics:
            kwargs["enable_iter_perf_stats"] = True
            kwargs["return_perf_metrics"] = True  # each finished request's metrics_dict: the trtllm_* series
        for key, value in self._yaml().items():  # the YAML's blocks merge one level deep into the flags'
            if isinstance(value, dict) and isinstance(kwargs.get(key), dict):
                kwargs[key] = {**kwargs[key], **value}
            else:
                kwargs[key] = value
        # Last, and at every depth (Dynamo's deep_update): --override-engine-args or the --trtllm.* flags.
        apply_overrides(kwargs, json.loads(self.override_engine_args or "{}"))
        return kwargs

    def _yaml(self) -> dict[str, Any]:
        if not self.extra_engine_args:
            return {}
        with open(self.extra_engine_args, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"--extra-engine-args {self.extra_engine_args}: not a YAML mapping")
        return data


def build_parser() -> DynamicFlagParser:
    """The worker's own flags and its `--trtllm.*` ones (`parse_worker_args` adds NVIDIA Dynamo's of
    `TRTLLM_FLAGS`): the parser `dynamo.deploy validate` checks manifests with."""
    parser = DynamicFlagParser(prog=PROG, description=(DynamoTrtllmArgs.__doc__ or "").strip())
    add_arguments(parser, DynamoTrtllmArgs)
    return parser


def parse_args(argv=None) -> DynamoTrtllmArgs:
    return parse_worker_args(argv)[0]


def parse_worker_args(argv=None) -> tuple[DynamoTrtllmArgs, list[str]]:
    """(the args, a warning per NVIDIA Dynamo flag accepted without effect); exits 2 on a bad one.
    The `--trtllm.*` flags are taken out first and become `override_engine_args` once the
    environment has been read, so that DYN_TRTLLM_OVERRIDE_ENGINE_ARGS conflicts with them too."""
    try:
        rest, overrides = split_dynamic_flags(sys.argv[1:] if argv is None else argv)
        config, warnings = parse_with_compat(DynamoTrtllmArgs, TRTLLM_FLAGS, rest, prog=PROG)
        config.override_engine_args = merged_override_json(config.override_engine_args, overrides)
    except DynamicFlagError as exc:
        build_parser().error(str(exc))
    return config, warnings + migration_limit_warnings(config.migration_limit)
