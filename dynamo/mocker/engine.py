"""The mocker engine: what a worker process calls instead of a real LLM engine.

`MockEngine.generate(PreprocessedRequest)` streams `LLMEngineOutput`s produced by a
single background scheduler task (`scheduler.py`) that simulates continuous
batching with Dynamo's timing model, a paged KV cache that publishes real KV events
(`kv_manager.py`), and deterministic fake tokens (`tokens.py`). Closing or
cancelling the stream aborts the request and frees its blocks at once.

Only one data-parallel rank is simulated per engine: a worker wanting
`--data-parallel-size N` runs N engines with distinct `dp_rank`s.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Callable, Iterable

from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest
from dynamo.mocker.args import FALLBACK_KV_BYTES_PER_TOKEN, MockerArgs
from dynamo.mocker.kv_manager import KvManager
from dynamo.mocker.scheduler import Scheduler, Sequence
from dynamo.llm.perf_data import load_profile
from dynamo.mocker.timing import TimingModel
from dynamo.mocker.tokens import TokenSampler, fake_logprobs, seed_for
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)


class MockEngine:
    def __init__(
        self,
        args: MockerArgs,
        *,
        vocab_size: int,
        context_length: int,
        eos_token_ids: list[int],
        special_ids: Iterable[int] = frozenset(),
        on_kv_event: Callable[..., None] | None = None,  # (event, storage_tier="device"): worker.adapter.KvEmit
        dp_rank: int = 0,
        script_for: Callable[[list[int]], list[int] | None] | None = None,
    ) -> None:
        args.validate()
        if context_length <= 0:
            raise ValueError(f"context_length must be > 0, got {context_length}")
        self.args = args
        self.mode = args.mode
        self.context_length = context_length
        self.dp_rank = dp_rank
        self.script_for = script_for  # `--replay-file`: scripted outputs for tests
        self.sampler = TokenSampler(vocab_size, frozenset(special_ids) | frozenset(eos_token_ids))
        self.kv = KvManager(
            args.num_gpu_blocks_override,
            args.block_size,
            enable_prefix_caching=args.enable_prefix_caching,
            on_event=on_kv_event,
            dp_rank=dp_rank,
            host_blocks=args.num_host_blocks,
            on_host_event=None if on_kv_event is None else (lambda e: on_kv_event(e, "host_pinned")),
        )
        self.timing = TimingModel(
            speedup_ratio=args.speedup_ratio,
            decode_speedup_ratio=args.decode_speedup_ratio,
            kv_bytes_per_token=args.kv_bytes_per_token or FALLBACK_KV_BYTES_PER_TOKEN,
            kv_transfer_bandwidth=args.kv_transfer_bandwidth,
            host_h2d_bandwidth=args.host_offload_h2d_bandwidth_gbps,
            profile=load_profile(args.planner_profile_data) if args.planner_profile_data else None,
        )
        self.scheduler = Scheduler(args, self.kv, self.timing)
        self._task: asyncio.Task | None = None
        if args.data_parallel_size > 1:
            log.warning("MockEngine simulates one DP rank (%d); run one engine per rank", dp_rank)

    # ---- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the step loop (`--startup-time` is the worker's to simulate, not the engine's)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self.scheduler.run(), name=f"mocker-scheduler-{self.dp_rank}")

    async def stop(self) -> None:
        """Stop the step loop; in-flight streams end with an "error" output."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.scheduler.fail_all("engine stopped")

    def publish_forward_passes(self, sink: Callable, worker_id: str) -> None:
        """Report one ForwardPassMetrics per scheduler step to `sink` (the worker's FPM relay)."""
        self.scheduler.worker_id, self.scheduler.dp_rank = worker_id, self.dp_rank
        self.scheduler.on_forward_pass = sink

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---- requests -----------------------------------------------------------------

    async def generate(self, request: PreprocessedRequest) -> AsyncIterator[LLMEngineOutput]:
        prompt = request.token_ids
        problem = self._reject_reason(prompt)
        if problem is not None:
            yield LLMEngineOutput(finish_reason=FinishReason.ERROR, error=problem)
            return
        seq = self._make_sequence(request)
        prefill_only = request.prefill_only or self.mode == WorkerRole.PREFILL
        self.scheduler.add(seq)
        loop = asyncio.get_running_loop()
        logprobs = request.output_options.logprobs
        first = True
        sent = seq.prompt_len  # seq.tokens[sent:] are sampled tokens not yet streamed
        try:
            while True:
                if len(seq.tokens) == sent and seq.finish_reason is None:
                    seq.waiter = loop.create_future()
                    await seq.waiter
                tokens = seq.tokens[sent:]
                sent += len(tokens)
                finish = seq.finish_reason
                out = LLMEngineOutput(token_ids=tokens, finish_reason=finish, error=seq.error)
                if logprobs is not None and tokens:
                    out.log_probs, out.top_logprobs = fake_logprobs(tokens, sent - len(tokens) - seq.prompt_len,
                                                                    logprobs, self.sampler)
                if first:
                    out.cached_tokens = seq.cached_tokens or 0
                    first = False
                if prefill_only and finish == FinishReason.LENGTH:
                    out.disaggregated_params = await self._transfer(seq)
                yield out
                if finish is not None:
                    return
        finally:
            if not seq.done:
                self.scheduler.abort(seq)

    def _reject_reason(self, prompt: list[int]) -> str | None:
        if self._task is None:
            return "engine is not running"
        if not prompt:
            return "empty prompt"
        if len(prompt) >= self.context_length:
            return f"prompt has {len(prompt)} tokens; the context length is {self.context_length}"
        return None

    def _make_sequence(self, request: PreprocessedRequest) -> Sequence:
        prompt = request.token_ids
        stop = request.stop_conditions
        room = self.context_length - len(prompt)
        if request.prefill_only or self.mode == WorkerRole.PREFILL:
            max_tokens = 1
        else:
            max_tokens = max(1, min(stop.max_tokens if stop.max_tokens is not None else room, room))
        extra = [*request.eos_token_ids, *(stop.stop_token_ids_hidden or ())]
        skip_prefill = self.mode == WorkerRole.DECODE and request.disaggregated_params is not None
        seq = Sequence(
            request.request_id,
            prompt,
            max_tokens,
            self.sampler.with_extra(extra),
            seed_for(prompt, request.sampling_options.seed),
            skip_prefill=skip_prefill,
            lora_name=request.lora_name,
            cache_salt=request.routing.cache_salt if request.routing is not None else None,
            media=request.media_salt,
        )
        if self.script_for is not None and not (request.prefill_only or self.mode == WorkerRole.PREFILL):
            seq.script = self.script_for(prompt)
        return seq

    async def _transfer(self, seq: Sequence) -> dict:
        """Prefill worker: simulate pushing the prompt's KV to a decode worker."""
        seconds = self.timing.transfer_seconds(seq.prompt_len)
        if seconds > 0:
            await asyncio.sleep(seconds)
        return {
            "transfer": "mocker",
            "prefill_worker_tokens": seq.prompt_len,
            "cached_tokens": seq.cached_tokens or 0,
            "kv_bytes": seq.prompt_len * self.timing.kv_bytes_per_token,
            "transfer_seconds": seconds,
        }

    # ---- metrics ------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions

    @property
    def prefix_cache_hit_rate(self) -> float:
        s = self.scheduler
        return s.admitted_cached_tokens / s.admitted_prompt_tokens if s.admitted_prompt_tokens else 0.0

    def metrics(self, worker_id: int = 0) -> LoadMetrics:
        active, total = self.kv.num_active_blocks, self.kv.capacity
        return LoadMetrics(
            worker_id=worker_id,
            dp_rank=self.dp_rank,
            request_active_slots=self.num_running,
            request_total_slots=self.args.max_num_seqs,
            kv_active_blocks=active,
            kv_total_blocks=total,
            num_requests_waiting=self.num_waiting,
            gpu_cache_usage_perc=active / total,
            gpu_prefix_cache_hit_rate=self.prefix_cache_hit_rate,
        )
