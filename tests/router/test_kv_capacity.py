"""A booking past a worker's KV capacity waits there until running requests end and free
blocks: the wait is predicted from the router's bookings, and priced against a cold prefill
elsewhere."""

import random

import pytest

from dynamo.router.active_sequences import ActiveSequences
from dynamo.router.config import KvRouterConfig
from dynamo.router.kv_capacity import (DEFAULT_ANSWER_TOKENS, AnswerPace, blocks_short, finish_time, memory_wait,
                                       priced_waits)
from dynamo.router.kv_router import KvRouter
from tests.router.test_kv_router import BS, store_prompt

DOC = list(range(2000))  # 500 blocks


def test_wait_ends_when_the_freed_blocks_cover_the_shortfall():
    releases = [(1.0, 30), (1.5, 30), (2.5, 100)]
    assert memory_wait(releases, 0, now=0.2) == 0.0
    assert memory_wait(releases, 30, now=0.2) == pytest.approx(0.8)
    assert memory_wait(releases, 31, now=0.2) == pytest.approx(1.3)
    assert memory_wait(releases, 500, now=0.2) == pytest.approx(2.3)  # more than all: after every one ends
    assert memory_wait(releases, 30, now=3.0) == 0.0  # overdue: any moment now
    assert memory_wait([], 30, now=0.0) == 0.0


def test_shortfall_and_finish_times():
    assert blocks_short(120, 100) == 20 and blocks_short(90, 100) == 0
    assert blocks_short(10**6, None) == 0  # unknown size: nothing to predict
    assert finish_time(2.0, 10, 0.05) == pytest.approx(2.5)
    assert finish_time(2.0, None, 0.05) == pytest.approx(2.0 + DEFAULT_ANSWER_TOKENS * 0.05)


def test_pace_is_a_weighted_mean_of_finished_answers():
    pace = AnswerPace()
    pace.observe(1.0, None)  # no expected length: teaches nothing
    assert pace.seconds_per_token is None
    pace.observe(1.0, 20)
    assert pace.seconds_per_token == pytest.approx(0.05)
    for _ in range(100):
        pace.observe(2.0, 20)
    assert pace.seconds_per_token == pytest.approx(0.1, rel=1e-3)


def test_a_block_shared_by_running_requests_is_freed_by_the_last_to_end():
    now = [0.0]
    active = ActiveSequences(BS, clock=lambda: now[0])
    key = (1, 0)
    active.add_request(key, "early", [1, 2, 3], 12, 0, answer_tokens=10)  # blocks 1, 2 shared with "late"
    now[0] = 1.0
    active.add_request(key, "late", [1, 2, 9, 10], 16, 0, answer_tokens=10)
    active.add_request((2, 0), "elsewhere", [1, 2], 8, 0, answer_tokens=1)
    releases = active.releases(key, lambda booked, answer: booked + answer)
    assert releases == [(10.0, 1), (11.0, 4)]  # "early" frees only its own block 3
    assert active.booking("late") == (1.0, 10)
    active.free("early")
    assert active.releases(key, lambda booked, answer: booked + answer) == [(11.0, 4)]
    assert active.booking("early") is None


def held_doc_router(capacity: int, now: list[float], offloading: bool = True) -> KvRouter:
    """Worker 2 holds DOC and runs three other 500-block requests booked at t=0 with 32-token
    answers; worker 1 is idle, its device cache empty; with `offloading` both keep what they
    evict in host memory (they have published blocks there)."""
    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft"), rng=random.Random(3), clock=lambda: now[0])
    r.add_worker(1, total_kv_blocks=capacity)
    r.add_worker(2, total_kv_blocks=capacity)
    store_prompt(r, 2, DOC)
    if offloading:
        for worker in (1, 2):
            store_prompt(r, worker, list(range(90_000, 90_008)), event_id=1, tier="host_pinned")
    for i in range(3):
        prompt = list(range(10_000 * (i + 1), 10_000 * (i + 1) + 2000))
        r.add_request(f"run{i}", r.select(prompt, request_id=f"run{i}", allowed=[2]), prompt, max_tokens=32)
        r.mark_prefill_complete(f"run{i}")
    return r


def test_a_held_prefix_goes_elsewhere_when_its_holder_must_wait_for_blocks():
    now = [0.05]
    r = held_doc_router(capacity=1800, now=now)  # 1,500 blocks running + the doc's 500 > 1,800
    sel = r.select(DOC + [1, 2, 3, 4], request_id="q")
    assert sel.worker_id == 1  # a cold 2,000-token prefill beats waiting ~1 s for an answer to end
    assert sel.logits[(2, 0)] - sel.logits[(1, 0)] > 0.5


def test_without_a_lower_tier_the_holder_keeps_it():
    # Going elsewhere to skip the wait would evict another prefix there, lost: not priced.
    now = [0.05]
    r = held_doc_router(capacity=1800, now=now, offloading=False)
    assert r.select(DOC + [1, 2, 3, 4]).worker_id == 2


def test_the_holder_keeps_it_when_blocks_free_soon_or_it_fits():
    now = [0.05]
    fits = held_doc_router(capacity=5000, now=now)
    assert fits.select(DOC + [1, 2, 3, 4]).worker_id == 2
    now = [0.0]
    ending = held_doc_router(capacity=1800, now=now)
    now[0] = 5.0  # the running answers are due: blocks free any moment
    assert ending.select(DOC + [1, 2, 3, 4]).worker_id == 2


def test_the_wait_follows_the_pace_answers_actually_take():
    now = [0.0]
    r = held_doc_router(capacity=1800, now=now)
    for i in range(3):  # these answers took 3 s for 32 tokens: the next end is further away than the prior says
        now[0] = 3.0
        r.free(f"run{i}")
    assert r.costs.pace.seconds_per_token == pytest.approx(3.0 / 32)
    for i in range(3):
        prompt = list(range(50_000 * (i + 1), 50_000 * (i + 1) + 2000))
        r.add_request(f"next{i}", r.select(prompt, request_id=f"next{i}", allowed=[2]), prompt, max_tokens=32)
        r.mark_prefill_complete(f"next{i}")
    now[0] = 5.0  # 2 s into answers that take 3 s: the holder is still 1 s from freeing blocks
    assert r.select(DOC + [1, 2, 3, 4]).worker_id == 1
    r.costs.pace.seconds_per_token = None  # at the prior's ~33 ms a token, those answers would be over by now
    assert r.select(DOC + [1, 2, 3, 4]).worker_id == 2


def test_waits_are_priced_only_beside_a_worker_that_keeps_its_evictions():
    waits = {"holder": 0.8, "other": 0.0}
    assert priced_waits(waits, lambda key: True) == waits
    assert priced_waits(waits, lambda key: key == "holder") == {}  # the other would lose what it evicts
    assert priced_waits({"a": 0.0, "b": 0.0}, lambda key: True) == {}


def test_releases_equal_a_block_by_block_count_on_chained_prompts():
    """The bisecting walk against the definition: each block is freed when the last request holding
    it ends. Prompts share prefixes of random lengths, as chained sequence hashes do."""
    from dynamo.llm.kv_events.hashing import sequence_hashes

    rng = random.Random(5)
    roots = [[rng.randrange(1 << 60) for _ in range(40)] for _ in range(3)]
    for trial in range(30):
        active, key = ActiveSequences(BS, clock=lambda: 0.0), (1, 0)
        prompts = {}
        for i in range(rng.randrange(1, 12)):
            root = rng.choice(roots)
            local = root[:rng.randrange(0, 40)] + [rng.randrange(1 << 60) for _ in range(rng.randrange(0, 5))]
            prompts[f"r{i}"] = sequence_hashes(local)
            active.add_request(key, f"r{i}", prompts[f"r{i}"], 0, 0, answer_tokens=rng.randrange(1, 4))
        finish = {rid: float(active.booking(rid)[1]) for rid in prompts}
        got = active.releases(key, lambda booked, answer: float(answer))
        order = sorted(prompts, key=lambda rid: finish[rid])  # the walk's order (stable on ties)
        last_holder = {}
        for rid in order:
            for h in prompts[rid]:
                last_holder[h] = rid
        want = [(finish[rid], sum(last_holder[h] == rid for h in set(prompts[rid]))) for rid in order]
        assert got == want, trial
