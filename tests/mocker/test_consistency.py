"""Randomized workload on a tiny cache: the KV event stream must stay replayable by a
router (parents known, removals of known blocks) and accounting must return to zero."""

import asyncio
import random

import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.engine import MockEngine
from dynamo.llm.kv_events.protocol import KvCleared, KvRemoved, KvStored


class EventReplayer:
    def __init__(self):
        self.blocks: set[int] = set()
        self.next_id = 1  # event ids start at 1, as Dynamo's mocker numbers them

    def __call__(self, event):
        assert event.event_id == self.next_id
        self.next_id += 1
        data = event.data
        if isinstance(data, KvStored):
            assert data.parent_hash is None or data.parent_hash in self.blocks
            for block in data.blocks:
                assert block.block_hash not in self.blocks
                self.blocks.add(block.block_hash)
        elif isinstance(data, KvRemoved):
            for h in data.block_hashes:
                self.blocks.remove(h)
        elif isinstance(data, KvCleared):
            self.blocks.clear()


@pytest.mark.parametrize("caching,chunked", [(True, True), (True, False), (False, True)])
async def test_random_workload_keeps_events_and_accounting_consistent(caching, chunked):
    rng = random.Random(1)
    replay = EventReplayer()
    args = MockerArgs(speedup_ratio=0, block_size=4, num_gpu_blocks_override=40, max_num_seqs=6,
                      max_num_batched_tokens=32, enable_prefix_caching=caching,
                      enable_chunked_prefill=chunked)  # fmt: skip
    engine = MockEngine(args, vocab_size=64, context_length=200, eos_token_ids=[0], on_kv_event=replay)
    await engine.start()
    prefixes = [[rng.randrange(1, 64) for _ in range(rng.randrange(4, 24))] for _ in range(4)]

    async def client(i):
        prompt = rng.choice(prefixes) + [rng.randrange(1, 64) for _ in range(rng.randrange(0, 10))]
        stop = StopConditions(max_tokens=rng.randrange(1, 30))
        req = PreprocessedRequest(request_id=str(i), model="m", token_ids=prompt, stop_conditions=stop)
        limit = rng.randrange(1, 40) if rng.random() < 0.3 else None  # some clients disconnect
        count = 0
        gen = engine.generate(req)
        async for out in gen:  # noqa: B007 (the last output is returned)
            count += 1
            used = engine.kv.num_active_blocks + engine.kv.num_cached_blocks
            assert used <= engine.kv.capacity
            if limit is not None and count >= limit:
                break
        await gen.aclose()
        return out

    outs = await asyncio.gather(*(client(i) for i in range(120)))
    assert not any(o.finish_reason == "error" for o in outs)
    assert engine.kv.num_active_blocks == 0 and engine.num_running == 0 and engine.num_waiting == 0
    assert engine.num_preemptions > 0
    assert set(engine.kv._inactive) == replay.blocks
    await engine.stop()
