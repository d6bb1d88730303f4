"""STAND-INS for engines that cannot run on these CPU machines (SGLang: no CPU kernels on
PyPI; TensorRT-LLM: a placeholder package on PyPI). Tests only.

Each implements only the documented async interface our adapter calls, with a trivial
deterministic "model" (token i of a reply = (sum(prompt) + i) % 1000 + 10), and records
what it was called with so the tests can check the adapter's translation:

- `SglangEngineStandIn`: `sgl.Engine` - `async_generate(input_ids=, sampling_params=,
  stream=True, rid=, bootstrap_host/port/room=, priority=, image_data=)` (a priority without
  `enable_priority_scheduling` is refused, as `--abort-on-priority-when-disabled` does) returning an async iterator of
  `{"output_ids": [...delta...], "meta_info": {"id", "finish_reason", "prompt_tokens",
  "cached_tokens"}}` (incremental_streaming_output), `tokenizer_manager.abort_request(rid=)`,
  `tokenizer_manager.server_args`, `tokenizer_manager.model_config.context_len`,
  `shutdown()`; and a real ZMQ PUB socket publishing SGLang's KV-event wire format
  (`[topic, seq, msgpack([ts, [["BlockStored", hashes, parent, token_ids, block_size,
  lora_id, medium]], dp_rank])]`) at the `kv_events_config` endpoint. With `enable_metrics`, as
  SGLang: PROMETHEUS_MULTIPROC_DIR set to a folder of its own, a scheduler process that writes its
  series there (`sglang:num_running_reqs`), and the tokenizer manager's series in this process's
  global registry (`sglang:prompt_tokens_total`, counted per request).
- `TrtllmApiStandIn`: `LLM(**kwargs)` with `generate_async(token_ids, sampling_params=,
  streaming=True, disaggregated_params=)` returning a result that is async-iterable (each
  item has `.outputs[0].token_ids` cumulative, `.finish_reason`, `.stop_reason`,
  `.disaggregated_params`) and has `.abort()`; `get_kv_cache_events_async(timeout)` and
  `get_stats_async(timeout)` yielding TRT-LLM's event and stats dicts; `shutdown()`;
  plus `SamplingParams`, `DisaggregatedParams` and `KvCacheConfig`; with `return_perf_metrics` a finished
  output's `metrics_dict`, and `MetricsCollector(labels).log_metrics_dict` (`MetricsCollectorStandIn`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from typing import Any

import msgspec
import zmq


def reply_token(prompt: list[int], i: int) -> int:
    return (sum(prompt) + i) % 1000 + 10


class _Request:
    def __init__(self, prompt: list[int], max_tokens: int, eos: list[int], ignore_eos: bool) -> None:
        self.prompt, self.max_tokens, self.eos, self.ignore_eos = prompt, max_tokens, eos, ignore_eos
        self.aborted = False

    async def tokens(self, step: float = 0.01):
        for i in range(self.max_tokens):
            await asyncio.sleep(step)
            if self.aborted:
                return
            yield reply_token(self.prompt, i), i == self.max_tokens - 1


# ---- SGLang ------------------------------------------------------------------------

# What an SGLang scheduler process writes to the multiprocess folder (prometheus_client's own files).
SGLANG_SCHEDULER_SERIES = """
from prometheus_client import Gauge
running = Gauge("sglang:num_running_reqs", "The number of running requests.", ["model_name", "tp_rank"],
                multiprocess_mode="max")
running.labels("standin", "0").set(3)
"""

class SglangEngineStandIn:
    def __init__(self, server_args: Any, context_len: int = 4096) -> None:
        self.server_args = server_args
        self.calls: list[dict[str, Any]] = []
        self.active: dict[str, _Request] = {}
        self.aborted: list[str] = []
        self.tokenizer_manager = types.SimpleNamespace(
            server_args=server_args, model_config=types.SimpleNamespace(context_len=context_len),
            abort_request=self._abort)
        self.scheduler_info = {"max_total_num_tokens": 8192}
        self._seq = 0
        self._ctx = zmq.Context()
        self._pub = None
        if server_args.kv_events_config:
            cfg = json.loads(server_args.kv_events_config)
            self.topic = cfg.get("topic", "")
            self._pub = self._ctx.socket(zmq.PUB)
            self._pub.bind(cfg["endpoint"])
        self.shut_down = False
        self.metrics_dir = self.prompt_tokens = None
        if getattr(server_args, "enable_metrics", False):
            self._start_metrics()

    def _start_metrics(self) -> None:
        from prometheus_client import Counter

        self.metrics_dir = tempfile.mkdtemp(prefix="sglang-standin-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        subprocess.run([sys.executable, "-c", SGLANG_SCHEDULER_SERIES], env=dict(os.environ), check=True,
                       timeout=60)
        self.prompt_tokens = Counter("sglang:prompt_tokens", "Number of prefill tokens processed.", ["model_name"])

    def _abort(self, rid: str = "", abort_all: bool = False) -> None:
        self.aborted.append(rid)
        req = self.active.pop(rid, None)
        if req is not None:
            req.aborted = True

    async def async_generate(self, input_ids=None, sampling_params=None, stream=False, rid=None,
                             bootstrap_host=None, bootstrap_port=None, bootstrap_room=None, priority=None,
                             image_data=None, **_):
        assert stream is True and input_ids is not None and rid is not None
        if priority is not None and not self.server_args.enable_priority_scheduling:
            raise ValueError("priority given but priority scheduling is disabled")  # SGLang's abort-on-priority
        self.calls.append({"input_ids": input_ids, "sampling_params": sampling_params, "rid": rid,
                           "bootstrap": (bootstrap_host, bootstrap_port, bootstrap_room), "priority": priority,
                           "image_data": image_data})
        sp = sampling_params
        if len(input_ids) >= self.tokenizer_manager.model_config.context_len:
            raise ValueError(f"The input ({len(input_ids)} tokens) is longer than the model's context length")
        req = _Request(input_ids, sp["max_new_tokens"], sp.get("stop_token_ids") or [], sp.get("ignore_eos", False))
        if self.prompt_tokens is not None:
            self.prompt_tokens.labels("standin").inc(len(input_ids))
        self.active[rid] = req
        self._publish_stored(input_ids)
        return self._stream(rid, req)

    async def _stream(self, rid: str, req: _Request):
        first = True
        try:
            async for token, last in req.tokens():
                meta = {"id": rid, "prompt_tokens": len(req.prompt),
                        "finish_reason": {"type": "length", "length": req.max_tokens} if last else None}
                if first:
                    meta["cached_tokens"] = 0
                    first = False
                yield {"output_ids": [token], "meta_info": meta}
            if req.aborted:
                yield {"output_ids": [], "meta_info": {"id": rid, "finish_reason": {"type": "abort"}}}
        finally:
            self.active.pop(rid, None)

    def _publish_stored(self, prompt: list[int]) -> None:
        if self._pub is None:
            return
        page = self.server_args.page_size
        full = len(prompt) // page * page
        if not full:
            return
        hashes = [hash(tuple(prompt[: i + page])) & 0x7FFFFFFFFFFFFFFF for i in range(0, full, page)]
        batch = [time.time(), [["BlockStored", hashes, None, prompt[:full], page, None, "GPU"]], 0]
        self._seq += 1
        self._pub.send_multipart([self.topic.encode(), self._seq.to_bytes(8, "big"),
                                  msgspec.msgpack.encode(batch)])

    def shutdown(self) -> None:
        self.shut_down = True
        if self._pub is not None:
            self._pub.close(linger=0)
        self._ctx.term()
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


@dataclasses.dataclass
class SglangServerArgsStandIn:
    """The ServerArgs fields the adapter reads (the real class needs SGLang installed)."""

    model_path: str
    served_model_name: str | None = None
    tokenizer_path: str | None = None
    page_size: int = 4
    context_length: int | None = None
    kv_events_config: str | None = None
    disaggregation_mode: str = "null"
    disaggregation_bootstrap_port: int = 8998
    disaggregation_transfer_backend: str = "nixl"
    dp_size: int = 1
    enable_dp_attention: bool = False
    max_running_requests: int | None = 64
    skip_tokenizer_init: bool = False
    incremental_streaming_output: bool = False
    enable_priority_scheduling: bool = False
    schedule_low_priority_values_first: bool = False
    enable_multimodal: bool = False
    enable_metrics: bool = False
    grammar_backend: str = "xgrammar"


# ---- TensorRT-LLM ----------------------------------------------------------------------

@dataclasses.dataclass
class DisaggregatedParams:
    request_type: str | None = None
    first_gen_tokens: list[int] | None = None
    ctx_request_id: int | None = None
    opaque_state: bytes | None = None
    draft_tokens: list[int] | None = None


class SamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.max_tokens = kwargs.get("max_tokens", 16)


class KvCacheConfig:
    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class GuidedDecodingParams:
    """TensorRT-LLM's structured-output constraint: `json`, `json_object`, `regex`, `grammar` (one of)."""

    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - {"json", "json_object", "regex", "grammar", "structural_tag"}
        assert not unknown, f"not a GuidedDecodingParams field: {unknown}"
        self.kwargs = kwargs


class _TrtResult:
    def __init__(self, llm: "TrtllmLLMStandIn", req: _Request, disagg: DisaggregatedParams | None) -> None:
        self.llm, self.req, self.disagg = llm, req, disagg
        self.aborted = False

    def abort(self) -> None:
        self.aborted = self.req.aborted = True
        self.llm.aborted += 1

    async def __aiter__(self):
        tokens: list[int] = []
        self.llm.active += 1
        try:
            async for token, last in self.req.tokens():
                tokens.append(token)
                params = None
                if last and self.disagg is not None and self.disagg.request_type == "context_only":
                    params = DisaggregatedParams(request_type="context_only", first_gen_tokens=[token],
                                                 ctx_request_id=7, opaque_state=b"\x00state\xff")
                completion = types.SimpleNamespace(token_ids=list(tokens), finish_reason="length" if last else None,
                                                   stop_reason=None, disaggregated_params=params)
                out = types.SimpleNamespace(outputs=[completion], finished=last)
                if last and self.llm.kwargs.get("return_perf_metrics"):
                    out.metrics_dict = {"ttft": 0.02, "e2e": 0.05, "finish_reason": "length"}
                yield out
        finally:
            self.llm.active -= 1


class TrtllmLLMStandIn:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.aborted = 0
        self.events: asyncio.Queue = asyncio.Queue()
        self.args = types.SimpleNamespace(max_seq_len=kwargs.get("max_seq_len") or 4096)
        self._event_id = 0
        self.shut_down = False

    def generate_async(self, inputs, sampling_params=None, streaming=False, disaggregated_params=None, **_):
        assert streaming is True
        self.calls.append({"inputs": inputs, "sampling_params": sampling_params,
                           "disaggregated_params": disaggregated_params})
        if len(inputs) >= self.args.max_seq_len:
            raise ValueError(f"prompt length {len(inputs)} exceeds max_seq_len {self.args.max_seq_len}")
        kw = sampling_params.kwargs
        block = self.kwargs["kv_cache_config"].tokens_per_block
        full = len(inputs) // block * block
        if full:
            self._event_id += 1
            blocks = [{"type": "stored_block", "block_hash": 1000 + i,
                       "tokens": [{"type": "unique_token", "token_id": t} for t in inputs[i * block:(i + 1) * block]]}
                      for i in range(full // block)]
            self.events.put_nowait({"event_id": self._event_id, "data": {"type": "stored", "parent_hash": None,
                                                                        "blocks": blocks}, "window_size": 4096})
        req = _Request(list(inputs), kw["max_tokens"], kw.get("stop_token_ids") or [], kw.get("ignore_eos", False))
        return _TrtResult(self, req, disaggregated_params)

    async def get_kv_cache_events_async(self, timeout: float | None = None):
        try:
            while True:
                yield await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:
            return

    async def get_stats_async(self, timeout: float | None = None):
        await asyncio.sleep(0.05)
        yield json.dumps({"numActiveRequests": self.active, "maxNumActiveRequests": 64, "numQueuedRequests": 0,
                          "kvCacheStats": {"maxNumBlocks": 100, "usedNumBlocks": 3 * self.active,
                                           "tokensPerBlock": 4}})

    def shutdown(self) -> None:
        self.shut_down = True


class MetricsCollectorStandIn:
    """`tensorrt_llm.metrics.collector.MetricsCollector(labels)` as TensorRT-LLM 1.1 has it: bare series
    names (Dynamo adds `trtllm_`), `log_metrics_dict` per finished request. TensorRT-LLM registers them in
    the global registry; the stand-in in none, so that a test process can hold several workers' collectors."""

    def __init__(self, labels: dict[str, str]) -> None:
        from prometheus_client import Counter, Histogram

        self.labels = labels
        self.counter_request_success = Counter("request_success_total", "Count of successfully processed requests.",
                                               [*labels, "finished_reason"], registry=None)
        self.histogram_time_to_first_token = Histogram("time_to_first_token_seconds",
                                                       "Histogram of time to first token in seconds.", list(labels),
                                                       buckets=(0.01, 0.05, 0.1), registry=None)

    def log_metrics_dict(self, metrics: dict[str, Any]) -> None:
        self.counter_request_success.labels(**self.labels, finished_reason=metrics["finish_reason"]).inc()
        self.histogram_time_to_first_token.labels(**self.labels).observe(metrics["ttft"])


def trtllm_api_standin() -> types.SimpleNamespace:
    """Stands in for `dynamo.trtllm.adapter.trtllm_api()` (the real one imports tensorrt_llm)."""
    return types.SimpleNamespace(LLM=TrtllmLLMStandIn, SamplingParams=SamplingParams,
                                 DisaggregatedParams=DisaggregatedParams, KvCacheConfig=KvCacheConfig,
                                 GuidedDecodingParams=GuidedDecodingParams, MetricsCollector=MetricsCollectorStandIn)
