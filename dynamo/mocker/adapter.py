"""The mocker as an engine adapter: `MockEngine` behind the worker harness.

The simulated engine reports its KV events in-process (through `EngineContext.emit_kv_event`)
and aborts a request when its stream is closed, so `abort` has nothing left to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import AsyncIterator

from prometheus_client import Histogram

from dynamo.llm.media import image_urls_of
from dynamo.llm.model_card import MEDIA_INPUT_KEY, STRUCTURED_OUTPUT_KEY
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest
from dynamo.llm.tokenizer import Tokenizer
from dynamo.mocker.args import MockerArgs, read_model_config, resolve_model_dir
from dynamo.mocker.engine import MockEngine
from dynamo.mocker.replay import Replay
from dynamo.mocker.tokens import fragment_ids
from dynamo.mocker.vllm_metrics import VllmMetrics
from dynamo.llm.kv_events.protocol import LoadMetrics
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.adapter import EngineContext, EngineInfo, Gauges, LoraNotLoaded
from dynamo.worker.media_loader import ImageLoader


TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class MockerAdapter:
    name = "mocker"

    def __init__(self, args: MockerArgs) -> None:
        self.args = args
        self.engine: MockEngine | None = None
        self._started = False
        self.loras: dict[str, int] = {}  # simulated adapters: name -> lora id
        self.images: ImageLoader | None = None  # --enable-multimodal: fetched and decoded, then not looked at
        self.vllm: VllmMetrics | None = None  # Dynamo's mocker's `vllm:*` series

    async def start(self, ctx: EngineContext) -> EngineInfo:
        # A directory, or a Hugging Face id found in the local cache (or fetched): the served name stays the id.
        model_dir = await asyncio.to_thread(resolve_model_dir, self.args.model_path)
        args = self.args = self.args.resolved(read_model_config(model_dir))
        tokenizer = Tokenizer.from_dir(model_dir)
        replay = Replay.from_file(args.replay_file, tokenizer) if args.replay_file else None
        self.engine = MockEngine(args, vocab_size=tokenizer.vocab_size, context_length=args.context_length,
                                 eos_token_ids=tokenizer.eos_token_ids,
                                 special_ids=tokenizer.special_ids | fragment_ids(tokenizer),
                                 on_kv_event=ctx.emit_kv_event, script_for=replay.script_for if replay else None)
        self.engine.publish_forward_passes(ctx.emit_forward_pass, ctx.worker_label)
        ttft = Histogram("dynamo_mocker_time_to_first_token_seconds", "Engine-side TTFT: arrival to first token",
                         registry=ctx.registry, buckets=TTFT_BUCKETS)
        vllm = self.vllm = VllmMetrics(ctx.registry, self.engine, args.model_name or args.model_path,
                                       self.engine.dp_rank)
        self.engine.scheduler.on_first_token = lambda seconds: (ttft.observe(seconds), vllm.ttft.observe(seconds))
        if args.startup_time:
            await asyncio.sleep(args.startup_time)
        await self.engine.start()
        self._started = True
        if args.enable_multimodal:
            self.images = ImageLoader(args.media_policy())
        return EngineInfo(
            model_dir=model_dir, served_name=args.model_name or args.model_path, block_size=args.block_size,
            context_length=args.context_length, total_kv_blocks=args.num_gpu_blocks_override,
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
            publishes_kv_events=args.enable_prefix_caching, reports_steps=True,  # publish_forward_passes above
            max_loras=args.max_loras if args.enable_lora else None,
            runtime_data={**({MEDIA_INPUT_KEY: ["image"]} if args.enable_multimodal else {}),
                          **({STRUCTURED_OUTPUT_KEY: True} if args.structured_output else {})},
            summary=f"{args.num_gpu_blocks_override} KV blocks of {args.block_size} tokens, "
                    f"speedup {args.speedup_ratio:g}")

    async def generate(self, request: PreprocessedRequest, request_id: str) -> AsyncIterator[LLMEngineOutput]:
        if request.lora_name is not None and request.lora_name not in self.loras:
            raise LoraNotLoaded(request.lora_name)
        if request.multi_modal_data:  # a vision engine fails a request whose image it cannot read: so does this
            if self.images is None:
                raise ValueError("this worker reads no images (the mocker reads them with --enable-multimodal)")
            await self.images.load(image_urls_of(request.multi_modal_data))
        first, started = True, time.monotonic()
        last = None  # when the last tokens came (vllm:inter_token_latency_seconds: the gaps after the first)
        async for out in self.engine.generate(request):
            if first and out.error is not None and not out.token_ids and self.engine.running:
                # Admission refusal (empty prompt, prompt beyond the context): the request's fault,
                # reported like every other engine's validation error.
                raise ValueError(out.error)
            first = False
            if out.token_ids:
                now = time.monotonic()
                if last is not None:
                    self.vllm.tokens(len(out.token_ids), now - last)
                last = now
            if out.finish_reason is not None:  # the caller may close the stream as soon as it has this one
                self.vllm.e2e.observe(time.monotonic() - started)
            yield out

    async def load_lora(self, name: str, path: str, lora_id: int) -> None:
        """Simulated: check the adapter's config the way vLLM would, then hold it by name."""
        try:
            config = json.loads(open(os.path.join(path, "adapter_config.json")).read())
        except (OSError, ValueError) as exc:
            raise ValueError(f"unreadable adapter_config.json: {exc}") from None
        rank = config.get("r")
        if not isinstance(rank, int) or rank <= 0:
            raise ValueError("adapter_config.json has no valid rank `r`")
        if rank > self.args.max_lora_rank:
            raise ValueError(f"LoRA rank {rank} is greater than --max-lora-rank {self.args.max_lora_rank}")
        if self.args.lora_load_time:
            await asyncio.sleep(self.args.lora_load_time)
        self.loras[name] = lora_id

    async def unload_lora(self, name: str) -> None:
        self.loras.pop(name, None)

    async def abort(self, request_id: str) -> None:
        """Nothing to do: closing `MockEngine.generate` aborts the sequence and frees its blocks."""

    def kv_event_source(self) -> None:
        return None

    def load_metrics(self, worker_id: int) -> LoadMetrics:
        return self.engine.metrics(worker_id)

    def gauges(self) -> Gauges:
        engine = self.engine
        return [
            ("dynamo_mocker_running_requests", "Sequences in the running batch", lambda: engine.num_running),
            ("dynamo_mocker_waiting_requests", "Sequences waiting for admission", lambda: engine.num_waiting),
            ("dynamo_mocker_preemptions", "Sequences preempted so far", lambda: engine.num_preemptions),
            ("dynamo_mocker_simulated_seconds", "Sum of the timing model's step durations",
             lambda: engine.scheduler.simulated_seconds),
            ("dynamo_mocker_busy_seconds", "Wall time with work to do (above simulated: steps ran late)",
             lambda: engine.scheduler.busy_seconds),
        ]  # KV-cache gauges: the harness's, under Dynamo's names, from `load_metrics` (the simulated KV manager)

    def error_code(self, exc: Exception) -> ErrorCode | None:
        return None

    def errored(self) -> bool:
        # The step loop ended on its own (an exception in the scheduler): nothing will be served.
        return self._started and not self.engine.running

    async def stop(self) -> None:
        self._started = False
        if self.images is not None:
            await self.images.close()
        if self.engine is not None:
            await self.engine.stop()
