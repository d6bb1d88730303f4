"""TensorRT-LLM's event API relayed: KV-cache events (`LLM.get_kv_cache_events_async`) into
the harness's KV sink, and iteration stats (`LLM.get_stats_async`) into a dict the
adapter's load metrics read.

Both APIs hand out iterators that end after `timeout` seconds without news; the loops
re-open them. Events are converted to the map form `EngineEventDecoder` reads, so block
hashing (tokens_hash per full block, LoRA namespace) is the same code as for vLLM/SGLang.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import msgspec

from dynamo.llm.kv_events.engine_decoder import EngineEventDecoder, EngineEventError
from dynamo.trtllm.request import kv_event_batch
from dynamo.worker.adapter import KvEmit

log = logging.getLogger(__name__)

POLL_TIMEOUT = 2.0
_encode = msgspec.msgpack.Encoder().encode


class TrtllmKvEventSource:
    def __init__(self, llm: Any, block_size: int) -> None:
        self.llm = llm
        self.block_size = block_size
        self.relayed = 0
        self._task: asyncio.Task | None = None

    async def start(self, emit: KvEmit) -> None:
        decoder = EngineEventDecoder(0, self.block_size)
        self._task = asyncio.get_running_loop().create_task(self._run(decoder, emit), name="trtllm-kv-events")
        log.info("relaying TRT-LLM KV events (get_kv_cache_events_async)")

    async def _run(self, decoder: EngineEventDecoder, emit: KvEmit) -> None:
        while True:
            try:
                async for event in self.llm.get_kv_cache_events_async(timeout=POLL_TIMEOUT):
                    self._relay(decoder, event, emit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # engine shutting down or a transient error: keep polling
                log.debug("KV event poll: %s", exc)
                await asyncio.sleep(POLL_TIMEOUT)

    def _relay(self, decoder: EngineEventDecoder, event: Any, emit: KvEmit) -> None:
        if isinstance(event, str):
            event = json.loads(event)
        events = kv_event_batch(event, self.block_size)
        if not events:
            return
        seq = int(event.get("event_id") or 0)
        payload = _encode({"ts": 0.0, "events": events, "data_parallel_rank": int(event.get("attention_dp_rank") or 0)})
        try:
            decoded = decoder.decode([b"", seq.to_bytes(8, "big"), payload])
        except EngineEventError as exc:
            log.warning("dropping undecodable TRT-LLM KV event: %s", exc)
            return
        for routed in decoded:
            emit(routed.event, routed.storage_tier)
            self.relayed += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def poll_stats(llm: Any, into: dict[str, Any]) -> None:
    """Keep `into` equal to the latest iteration-stats dict."""
    while True:
        try:
            async for stat in llm.get_stats_async(timeout=POLL_TIMEOUT):
                into.clear()
                into.update(json.loads(stat) if isinstance(stat, str) else stat)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("stats poll: %s", exc)
            await asyncio.sleep(POLL_TIMEOUT)
