"""Scheduler steps driven by hand (no event loop task): schedule() then complete()."""

import asyncio
import contextlib

import pytest

from dynamo.mocker.args import MockerArgs
from dynamo.mocker.kv_manager import KvManager, hash_blocks
from dynamo.mocker.scheduler import _MAX_CATCH_UP_S, Scheduler, Sequence, step_deadline
from dynamo.mocker.timing import TimingModel, decode_ms, prefill_ms
from dynamo.mocker.tokens import TokenSampler
from dynamo.llm.kv_events.protocol import KvStored

BS = 4


def make(capacity=64, speedup=1.0, **kw):
    args = MockerArgs(block_size=BS, num_gpu_blocks_override=capacity, speedup_ratio=speedup, **kw)
    events = []
    kv = KvManager(capacity, BS, enable_prefix_caching=args.enable_prefix_caching, on_event=events.append)
    return Scheduler(args, kv, TimingModel(speedup_ratio=speedup)), events


def seq(rid, prompt, max_tokens=4):
    return Sequence(str(rid), list(prompt), max_tokens, TokenSampler(100, {0}), rng=rid)


def step(sched):
    batch, seconds = sched.schedule()
    sched.complete(batch)
    return [(s.request_id, n) for s, n in batch], seconds


def test_chunked_prefill_spreads_a_long_prompt():
    sched, _ = make(max_num_batched_tokens=8)
    a = seq(1, range(10, 30))  # 20 tokens
    sched.add(a)
    assert step(sched)[0] == [("1", 8)]
    assert step(sched)[0] == [("1", 8)]
    assert a.num_generated == 0
    batch, seconds = step(sched)
    assert batch == [("1", 4)] and a.num_generated == 1
    assert seconds == pytest.approx(prefill_ms(4) / 1e3)
    batch, seconds = step(sched)  # now decoding
    assert batch == [("1", 1)] and a.num_generated == 2
    assert seconds == pytest.approx(decode_ms(sched.kv.num_active_blocks / 64) / 1e3)


def test_budget_shared_between_decode_and_new_prefill():
    sched, _ = make(max_num_batched_tokens=8)
    first = seq(1, range(10, 14))
    sched.add(first)
    step(sched)
    sched.add(seq(2, range(20, 40)))
    batch, seconds = step(sched)
    assert batch == [("1", 1), ("2", 7)]
    # The decode is timed at the KV usage of what was decoding, not of the prompt admitted beside it.
    decoding_blocks = len(first.held) + first.has_partial
    assert decoding_blocks < sched.kv.num_active_blocks
    assert seconds == pytest.approx((prefill_ms(7) + decode_ms(decoding_blocks / 64)) / 1e3)


def test_without_chunking_a_prompt_waits_for_a_fresh_budget():
    sched, _ = make(max_num_batched_tokens=8, enable_chunked_prefill=False)
    sched.add(seq(1, range(10, 14)))
    step(sched)
    sched.add(seq(2, range(20, 40)))  # 20 tokens > budget
    assert step(sched)[0] == [("1", 1)]  # not admitted next to a decode
    sched2, _ = make(max_num_batched_tokens=8, enable_chunked_prefill=False)
    sched2.add(seq(3, range(20, 40)))
    assert step(sched2)[0] == [("3", 20)]  # alone: admitted whole


def test_cached_prefix_costs_nothing():
    sched, _ = make()
    prompt = list(range(10, 22))  # 3 full blocks
    sched.add(seq(1, prompt, max_tokens=1))
    step(sched)
    b = seq(2, prompt + [50, 51], max_tokens=1)
    sched.add(b)
    assert step(sched)[0] == [("2", 2)]
    assert b.cached_tokens == 12
    c = seq(3, prompt, max_tokens=1)  # fully cached: the last token is still recomputed
    sched.add(c)
    assert step(sched)[0] == [("3", 1)] and c.cached_tokens == 11


def test_admission_stops_at_watermark():
    sched, _ = make(capacity=10, watermark=0.25)  # limit: 7 blocks
    for i in range(3):
        sched.add(seq(i, [i + 10] * 12, max_tokens=100))  # 3 blocks each
    batch, _ = step(sched)
    assert [rid for rid, _ in batch] == ["0", "1"]
    assert sched.kv.num_active_blocks == 6 and len(sched.waiting) == 1


def test_max_num_seqs_caps_running():
    sched, _ = make(max_num_seqs=2)
    for i in range(4):
        sched.add(seq(i, [i + 10] * 3))
    step(sched)
    assert len(sched.running) == 2 and len(sched.waiting) == 2


def test_decode_stores_blocks_as_they_fill():
    sched, events = make()
    # 1 full block + 2 tail tokens; 11 generated: KV exists for 16 tokens (never for the last one)
    s = seq(1, range(10, 16), max_tokens=11)
    sched.add(s)
    while not s.done:
        step(sched)
    stored = [b for e in events if isinstance(e.data, KvStored) for b in e.data.blocks]
    assert len(stored) == 16 // BS
    _, expected = hash_blocks(s.tokens[:16], BS)
    assert [b.block_hash for b in stored] == list(expected)
    parents = [e.data.parent_hash for e in events if isinstance(e.data, KvStored)]
    assert parents == [None] + list(expected[:3])  # prompt block, then one per fill
    assert sched.kv.num_active_blocks == 0 and sched.kv.num_cached_blocks == 4


def test_preemption_is_lifo_and_requeues_at_front():
    sched, _ = make(capacity=4, watermark=0.0)
    a, b = seq(1, [11] * 8, max_tokens=8), seq(2, [12] * 8, max_tokens=8)
    sched.add(a)
    sched.add(b)
    step(sched)  # both admitted: 4 blocks, cache full
    step(sched)  # both need a new block for their first decode token: b is preempted
    assert sched.num_preemptions == 1
    assert sched.running == [a] and list(sched.waiting) == [b] and not b.held
    while not a.done:
        step(sched)
    while not b.done:
        step(sched)
    assert a.num_generated == 8 and b.num_generated == 8


def test_abort_frees_everything():
    sched, _ = make()
    a, b = seq(1, range(10, 30)), seq(2, range(40, 50))
    sched.add(a)
    step(sched)
    sched.add(b)
    sched.abort(a)
    sched.abort(b)
    assert sched.kv.num_active_blocks == 0 and not sched.running and not sched.waiting


def test_decode_with_transferred_kv_skips_prefill():
    """Disaggregated decode (`skip_prefill`): the first step computes one token, costs a
    decode step (no prefill time), and generates straight away."""
    sched, _ = make()
    a = Sequence("1", list(range(10, 30)), 4, TokenSampler(100, {0}), rng=1, skip_prefill=True)
    sched.add(a)
    batch, seconds = step(sched)
    assert batch == [("1", 1)] and a.num_generated == 1
    assert seconds == pytest.approx(decode_ms(sched.kv.num_active_blocks / 64) / 1e3)
    plain = seq(2, range(10, 30))
    sched2, _ = make()
    sched2.add(plain)
    assert step(sched2)[0] == [("2", 20)]  # the same prompt without transferred KV: a full prefill


def test_preempted_decode_with_transferred_kv_recomputes_its_prompt():
    """Preemption frees a disaggregated decode's transferred KV, so when it is re-admitted it
    must prefill everything it has (prompt plus sampled tokens), not resume at one token."""
    # No prefix caching: its freed blocks cannot come back as cache hits that hide the recompute.
    sched, _ = make(capacity=4, watermark=0.0, enable_prefix_caching=False)
    a = seq(1, [11] * 8, max_tokens=4)
    b = Sequence("2", [12] * 8, 4, TokenSampler(100, {0}), rng=2, skip_prefill=True)
    sched.add(a)
    sched.add(b)
    assert step(sched)[0] == [("1", 8), ("2", 1)]  # the cache is full: 2 blocks each
    step(sched)  # both need a third block for their next token: b, admitted last, is preempted
    assert sched.num_preemptions == 1 and list(sched.waiting) == [b]
    for _ in range(10):  # b waits until a finishes and frees its blocks (a few steps; bounded)
        batch, _ = step(sched)
        if b not in sched.waiting:
            break
    assert ("2", 9) in batch  # re-admitted: 8 prompt tokens + its 1 sampled token, all recomputed
    for _ in range(10):
        if b.done:
            break
        step(sched)
    assert b.done and b.num_generated == 4


def test_a_late_step_is_caught_up_on_the_simulated_clock():
    # The loop woke 30 ms after the previous step's deadline (busy streaming): the next 40 ms
    # step still ends 40 ms after that deadline, so the lateness is not added to modelled time.
    assert step_deadline(10.0, 10.030, 0.040) == pytest.approx(10.040)
    # On time, or early: the step simply follows the previous one.
    assert step_deadline(10.0, 9.995, 0.040) == pytest.approx(10.040)
    # A stall far beyond the catch-up bound is dropped, not replayed as zero-length steps.
    assert step_deadline(10.0, 12.0, 0.040) == pytest.approx(12.0 - _MAX_CATCH_UP_S + 0.040)


def test_first_token_reported_once_per_request_with_engine_side_ttft():
    sched, _ = make(capacity=8, max_num_batched_tokens=8)
    seen = []
    sched.on_first_token = seen.append
    a, b = seq(1, range(10, 30), max_tokens=6), seq(2, range(40, 44), max_tokens=6)  # a: 3 prefill steps
    sched.add(a)
    sched.add(b)
    while not (a.done and b.done):
        step(sched)
    assert len(seen) == 2 and all(0 <= t < 60 for t in seen)
    assert sched.num_preemptions > 0  # the tiny cache preempted one: its recompute is not a new first token


async def test_an_idle_engine_starts_on_the_request_that_woke_it():
    # As Dynamo's mocker: a burst reaching an idle engine is not one batched prefill; the first request
    # runs alone and the rest join at the next step. A busy engine admits everything waiting.
    sched, _ = make(speedup=100.0)
    steps = []
    sched.on_forward_pass = lambda fpm: steps.append(fpm.scheduled_requests.num_prefill_requests)
    task = asyncio.create_task(sched.run())
    await asyncio.sleep(0.01)  # the engine is up and idle before the burst
    try:
        burst = [seq(i, range(10 * i, 10 * i + 12), max_tokens=3) for i in range(1, 4)]
        for s in burst:
            sched.add(s)
        while not all(s.done for s in burst):
            await asyncio.sleep(0.001)
        busy = [n for n in steps if n]  # idle heartbeats report nothing scheduled
        assert busy[:2] == [1, 2], steps
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
