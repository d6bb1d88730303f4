import asyncio

import pytest

from dynamo.llm.protocol import PreprocessedRequest, SamplingOptions, StopConditions
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.engine import MockEngine
from dynamo.llm.kv_events.protocol import KvRemoved, KvStored

SPECIAL = frozenset({0, 1, 2, 3})
VOCAB = 50


def request(rid, tokens, max_tokens=8, **kw):
    seed = kw.pop("seed", None)
    stop = StopConditions(max_tokens=max_tokens, **kw)
    return PreprocessedRequest(
        request_id=str(rid), model="m", token_ids=list(tokens), stop_conditions=stop,
        sampling_options=SamplingOptions(seed=seed),
    )  # fmt: skip


@pytest.fixture
async def make_engine():
    engines = []

    async def factory(context_length=4096, **overrides):
        events = []
        args = MockerArgs(**{"model_path": "m", "speedup_ratio": 0, "block_size": 4, **overrides})
        engine = MockEngine(
            args, vocab_size=VOCAB, context_length=context_length, eos_token_ids=[2],
            special_ids=SPECIAL, on_kv_event=events.append,
        )  # fmt: skip
        engine.events = events
        await engine.start()
        engines.append(engine)
        return engine

    yield factory
    for engine in engines:
        await engine.stop()


async def collect(engine, req):
    return [out async for out in engine.generate(req)]


def tokens_of(outputs):
    return [t for out in outputs for t in out.token_ids]


async def test_exact_max_tokens_and_finish_reason(make_engine):
    engine = await make_engine()
    outs = await collect(engine, request(1, range(10, 20), max_tokens=7))
    assert len(tokens_of(outs)) == 7
    assert outs[-1].finish_reason == "length"
    assert all(o.finish_reason is None for o in outs[:-1])
    assert outs[0].cached_tokens == 0
    assert engine.metrics().kv_active_blocks == 0 and engine.num_running == 0


async def test_max_tokens_defaults_to_context_room(make_engine):
    engine = await make_engine(context_length=30)
    outs = await collect(engine, request(1, range(10, 20), max_tokens=None))
    assert len(tokens_of(outs)) == 20 and outs[-1].finish_reason == "length"


async def test_shared_prefix_reports_cached_tokens(make_engine):
    engine = await make_engine()
    prefix = list(range(10, 30))  # 5 full blocks of 4
    await collect(engine, request(1, prefix + [40, 41, 42], max_tokens=3))
    outs = await collect(engine, request(2, prefix + [43, 44], max_tokens=3))
    assert outs[0].cached_tokens >= 5 * 4
    assert 0 < engine.metrics().gpu_prefix_cache_hit_rate < 1
    stored = [e.data for e in engine.events if isinstance(e.data, KvStored)]
    assert stored and [e.event_id for e in engine.events] == list(range(1, len(engine.events) + 1))


async def test_no_prefix_caching_means_no_hits(make_engine):
    engine = await make_engine(enable_prefix_caching=False)
    prefix = list(range(10, 30))
    await collect(engine, request(1, prefix, max_tokens=2))
    outs = await collect(engine, request(2, prefix, max_tokens=2))
    assert outs[0].cached_tokens == 0 and engine.events == []


async def test_admission_respects_max_num_seqs(make_engine):
    engine = await make_engine(max_num_seqs=2)
    seen = []

    async def watch():
        while True:
            seen.append(engine.num_running)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    results = await asyncio.gather(*(collect(engine, request(i, range(10 + i, 20 + i), 6)) for i in range(6)))
    watcher.cancel()
    assert all(len(tokens_of(r)) == 6 for r in results)
    assert max(seen) == 2


async def test_tiny_cache_preempts_and_everything_completes(make_engine):
    engine = await make_engine(num_gpu_blocks_override=12, watermark=0.0)
    reqs = [request(i, [10 + i] * 9, max_tokens=12) for i in range(6)]  # 3 blocks each, growing to 6
    results = await asyncio.gather(*(collect(engine, r) for r in reqs))
    assert all(len(tokens_of(r)) == 12 and r[-1].finish_reason == "length" for r in results)
    assert engine.num_preemptions > 0
    assert engine.metrics().kv_active_blocks == 0
    assert any(isinstance(e.data, KvRemoved) for e in engine.events)


async def test_request_larger_than_cache_errors(make_engine):
    engine = await make_engine(num_gpu_blocks_override=2)
    outs = await collect(engine, request(1, range(10, 30), max_tokens=2))
    assert outs[-1].finish_reason == "error" and "KV blocks" in outs[-1].error


async def test_cancellation_frees_blocks(make_engine):
    engine = await make_engine(speedup_ratio=1.0)
    gen = engine.generate(request(1, range(10, 30), max_tokens=1000))
    first = await gen.__anext__()
    assert first.token_ids
    assert engine.metrics().kv_active_blocks > 0 and engine.num_running == 1
    await gen.aclose()
    assert engine.metrics().kv_active_blocks == 0 and engine.num_running == 0

    task = asyncio.create_task(collect(engine, request(2, range(10, 30), max_tokens=1000)))
    while engine.num_running == 0:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.metrics().kv_active_blocks == 0 and engine.num_running + engine.num_waiting == 0


async def test_prompt_over_context_is_an_error(make_engine):
    engine = await make_engine(context_length=16)
    outs = await collect(engine, request(1, range(10, 30)))
    assert len(outs) == 1 and outs[0].finish_reason == "error" and "context" in outs[0].error


async def test_deterministic_with_seed_and_no_special_ids(make_engine):
    engine = await make_engine()
    a = tokens_of(await collect(engine, request(1, range(10, 20), 200, seed=7)))
    b = tokens_of(await collect(engine, request(2, range(30, 40), 200, seed=7)))
    c = tokens_of(await collect(engine, request(3, range(10, 20), 200, seed=8)))
    d = tokens_of(await collect(engine, request(4, range(10, 20), 200)))
    e = tokens_of(await collect(engine, request(5, range(10, 20), 200)))
    assert a == b and a != c and d == e
    assert all(0 <= t < VOCAB and t not in SPECIAL for t in a + c + d)
    hidden = tokens_of(await collect(engine, request(6, range(10, 20), 300, stop_token_ids_hidden=[5, 6])))
    assert not {5, 6} & set(hidden)


async def test_prefill_mode_output_shape(make_engine):
    engine = await make_engine(disaggregation_mode="prefill", kv_bytes_per_token=1024)
    outs = await collect(engine, request(1, range(10, 30), max_tokens=50))
    assert len(outs) == 1
    (out,) = outs
    assert len(out.token_ids) == 1 and out.finish_reason == "length"
    params = out.disaggregated_params
    assert params["transfer"] == "mocker" and params["prefill_worker_tokens"] == 20


async def test_prefill_only_flag_in_agg_mode(make_engine):
    engine = await make_engine()
    req = request(1, range(10, 30), max_tokens=50)
    req.prefill_only = True
    (out,) = await collect(engine, req)
    assert len(out.token_ids) == 1 and out.disaggregated_params["prefill_worker_tokens"] == 20


async def test_decode_mode_skips_prefill(make_engine):
    """A decode worker handed transferred KV schedules no prefill: its first step is already a
    decode over the whole prompt. Without transferred KV an equally long prompt is prefilled."""
    engine = await make_engine(disaggregation_mode="decode")
    fpms = []
    engine.publish_forward_passes(fpms.append, "w")
    req = request(1, range(10, 30), max_tokens=5)
    req.disaggregated_params = {"transfer": "mocker"}
    outs = await collect(engine, req)
    assert len(tokens_of(outs)) == 5 and outs[-1].finish_reason == "length"
    steps = [f.scheduled_requests for f in fpms if not f.idle]
    assert len(steps) == 5 and all(s.num_prefill_requests == 0 for s in steps)
    assert (steps[0].num_decode_requests, steps[0].sum_decode_kv_tokens) == (1, 20)

    fpms.clear()
    await collect(engine, request(2, range(40, 60), max_tokens=5))  # no disaggregated_params, no cache hit
    first = next(f.scheduled_requests for f in fpms if not f.idle)
    assert (first.num_prefill_requests, first.sum_prefill_tokens) == (1, 20)


async def test_stop_fails_inflight_streams(make_engine):
    engine = await make_engine(speedup_ratio=1.0)
    gen = engine.generate(request(1, range(10, 30), max_tokens=1000))
    await gen.__anext__()
    await engine.stop()
    rest = [out async for out in gen]
    assert rest[-1].finish_reason == "error" and rest[-1].error == "engine stopped"
    assert engine.metrics().kv_active_blocks == 0


async def test_not_started_engine_answers_with_an_error():
    args = MockerArgs(speedup_ratio=0, block_size=4)
    engine = MockEngine(args, vocab_size=VOCAB, context_length=64, eos_token_ids=[2])
    outs = await collect(engine, request(1, range(10, 20)))
    assert outs[0].finish_reason == "error" and "not running" in outs[0].error


async def test_metrics_shape_while_busy(make_engine):
    engine = await make_engine(speedup_ratio=1.0, max_num_seqs=3)
    gens = [engine.generate(request(i, range(10 + i, 30 + i), max_tokens=1000)) for i in range(5)]
    tasks = [asyncio.create_task(g.__anext__()) for g in gens]
    await asyncio.gather(*tasks[:3])
    m = engine.metrics(worker_id=7)
    assert (m.worker_id, m.request_active_slots, m.request_total_slots) == (7, 3, 3)
    assert m.num_requests_waiting == 2 and m.kv_total_blocks == 16384
    assert m.kv_active_blocks > 0 and m.gpu_cache_usage_perc == m.kv_active_blocks / 16384
    for t in tasks[3:]:
        t.cancel()
    await asyncio.gather(*tasks[3:], return_exceptions=True)
    for g in gens:
        await g.aclose()
    assert engine.metrics().kv_active_blocks == 0 and engine.num_waiting == 0


async def test_forward_pass_metrics_per_step_and_idle_heartbeat(make_engine):
    """One ForwardPassMetrics per scheduler step, in Dynamo's terms, then an all-zero heartbeat."""
    engine = await make_engine()
    fpms = []
    engine.publish_forward_passes(fpms.append, "abc")
    await asyncio.gather(*(collect(engine, request(i, range(10 + i, 30 + i), max_tokens=5)) for i in range(3)))
    await asyncio.sleep(0.05)
    steps = [f for f in fpms if not f.idle]
    assert steps and all(f.worker_id == "abc" for f in fpms)
    assert [f.counter_id for f in fpms] == list(range(1, len(fpms) + 1))
    # The idle engine starts on the request that woke it (as Dynamo's mocker); the other two join next step.
    first, second = steps[0].scheduled_requests, steps[1].scheduled_requests
    assert first.num_prefill_requests == 1 and first.sum_prefill_tokens == 20
    assert (second.num_prefill_requests, second.sum_prefill_tokens, second.num_decode_requests) == (2, 40, 1)
    decode = [f.scheduled_requests for f in steps if f.scheduled_requests.num_decode_requests == 3]
    assert decode and decode[0].sum_decode_kv_tokens == 22 + 21 + 21  # the first is one token ahead
    assert fpms[-1].idle and fpms[-1].wall_time == 0.0
    assert engine.scheduler.num_steps == len(steps)
