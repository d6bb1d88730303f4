"""The mocker's host KV tier (`--num-host-blocks`, vLLM's native CPU offload): device blocks are
written through to it, its own events (tier host_pinned) share the worker's event sequence, it
evicts least recently used leaves first, and a prompt evicted from the device but held on the host
is served as cached, its copy back timed at the host-to-device bandwidth."""

from __future__ import annotations

import pytest

from dynamo.llm.kv_events.protocol import KvRemoved, KvStored, StoredBlock
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.engine import MockEngine
from dynamo.mocker.host_tier import HostTier
from dynamo.mocker.kv_manager import KvManager, hash_blocks
from dynamo.mocker.timing import TimingModel
from tests.mocker.test_engine import SPECIAL, VOCAB, collect, request


def blocks(*hashes: int) -> list[StoredBlock]:
    return [StoredBlock(block_hash=h, tokens_hash=h + 1000) for h in hashes]


def test_write_through_evicts_leaves_first_and_reports_each_stretch():
    events: list = []
    host = HostTier(4, events.append)
    host.store(None, blocks(1, 2, 3))
    assert events == [KvStored(parent_hash=None, blocks=blocks(1, 2, 3))]
    host.store(2, blocks(7, 8))  # one over capacity: the least recently used leaf goes, the prefix stays
    assert events[1:] == [KvRemoved(block_hashes=[3]), KvStored(parent_hash=2, blocks=blocks(7, 8))]
    assert host.prefix([1, 2, 3], 0) == 2 and host.prefix([1, 2, 7, 8], 1) == 3
    events.clear()
    host.touch([1, 2])
    host.store(None, blocks(1, 2, 6))  # 1 and 2 held: refreshed; 6 new, parented on 2
    assert events == [KvRemoved(block_hashes=[8]), KvStored(parent_hash=2, blocks=blocks(6))]
    events.clear()
    host.store(99, blocks(8))  # its parent is not here: unreachable, not stored
    assert events == [] and host.prefix([99, 8], 0) == 0
    events.clear()
    host.store(None, blocks(7, 8, 9, 10, 11))  # longer than the whole tier: nothing of it is kept
    assert events == [] and len(host) == 4


def test_host_events_share_the_workers_event_sequence_and_tier():
    device, host = [], []
    kv = KvManager(4, 4, on_event=device.append, host_blocks=8, on_host_event=host.append)
    local, seqs = hash_blocks(list(range(100, 116)), 4)  # 4 blocks: the whole device
    assert kv.acquire(seqs, local)
    kv.release(seqs)
    other_local, other = hash_blocks(list(range(200, 208)), 4)
    assert kv.acquire(other, other_local)  # evicts 2 of the first prompt's blocks from the device
    ids = sorted(e.event_id for e in device + host)
    assert ids == list(range(1, len(ids) + 1))  # one sequence, as an engine numbers its batches
    assert isinstance(device[1].data, KvRemoved) and len(device[1].data.block_hashes) == 2
    assert kv.cached_prefix(seqs) == 2  # its leaves left the device...
    assert kv.host_prefix(seqs, 2) == 2 and kv.host_prefix(seqs, 0) == 4  # ...the host holds the whole prompt
    assert [len(e.data.blocks) for e in host] == [4, 2]


async def test_a_prompt_evicted_from_the_device_is_served_from_the_host():
    args = MockerArgs(model_path="m", speedup_ratio=0, block_size=4, num_gpu_blocks_override=12,
                      num_host_blocks=64)
    tiers: list[str] = []
    engine = MockEngine(args, vocab_size=VOCAB, context_length=4096, eos_token_ids=[2], special_ids=SPECIAL,
                        on_kv_event=lambda e, tier="device": tiers.append(tier))
    await engine.start()
    try:
        prompt = list(range(10, 42))  # 8 full blocks
        await collect(engine, request(1, prompt + [5], max_tokens=2))
        await collect(engine, request(2, list(range(50, 82)) + [5], max_tokens=2))  # pushes the first out
        assert engine.kv.cached_prefix(hash_blocks(prompt, 4)[1]) < 8
        outs = await collect(engine, request(3, prompt + [6], max_tokens=2))
        assert outs[0].cached_tokens == 32  # copied back from the host, not recomputed
        assert "host_pinned" in tiers and "device" in tiers
    finally:
        await engine.stop()


def test_copying_back_is_timed_at_the_host_to_device_bandwidth():
    timing = TimingModel(kv_bytes_per_token=1_000_000, host_h2d_bandwidth=10.0)
    assert timing.onboard_seconds(1000) == pytest.approx(0.1)  # 1 GB at 10 GB/s
    assert TimingModel(kv_bytes_per_token=1_000_000).onboard_seconds(1000) == 0.0  # 0: unlimited


def test_a_host_tier_needs_prefix_caching():
    with pytest.raises(ValueError, match="prefix caching"):
        MockerArgs(model_path="m", num_host_blocks=8, enable_prefix_caching=False).validate()
