"""The ttft cost model: the online fit recovers the coefficients behind observed TTFTs, and
the router it drives trades cache hits against queued prefill work and decode load."""

import random

import pytest

from dynamo.router.config import KvRouterConfig
from dynamo.router.cost_model import PRIOR, TtftModel, features
from dynamo.router.kv_router import KvRouter
from tests.router.test_kv_router import BS, store_prompt

LONG = list(range(400))  # 100 blocks


def test_fit_recovers_the_coefficients_behind_the_observations():
    truth = (0.005, 0.9, 0.05, 0.01)  # a CPU engine: prefill far more expensive than the prior says
    model = TtftModel()
    rng = random.Random(1)
    for _ in range(400):
        x = features(rng.randrange(0, 4000), rng.random(), rng.randrange(0, 32))
        model.observe(x, sum(c * v for c, v in zip(truth, x)) + rng.gauss(0, 0.002))
    assert abs(model.coef[1] - truth[1]) < 0.05 and abs(model.coef[2] - truth[2]) < 0.02
    assert model.observations == 400


def test_the_batch_slope_is_learned_at_low_concurrency():
    """A CPU engine with 0-3 requests running per worker, each slowing a new request's first token by
    20 ms: within one benchmark's worth of requests the fit says so, rather than blaming the waits on
    prefill (which would make every cache hit look worth hundreds of ms and pile requests on one worker)."""
    truth = (0.03, 0.07, 0.0, 0.02)  # per 1,000 tokens, per running request
    model = TtftModel()
    rng = random.Random(2)
    for _ in range(64):
        x = features(rng.choice([40, 1540]), 0.01, rng.randrange(0, 4))
        model.observe(x, sum(c * v for c, v in zip(truth, x)) + rng.gauss(0, 0.003))
    assert model.coef[3] == pytest.approx(truth[3], rel=0.3)
    assert model.coef[1] == pytest.approx(truth[1], rel=0.3)


def test_prior_holds_without_data_and_slopes_never_go_negative():
    model = TtftModel()
    assert model.coef == list(PRIOR)
    for i in range(64):  # more prefill work, faster answers: nonsense the fit must not learn
        model.observe(features(4000 - i * 50, 0.5, 4), 0.01 + i * 0.001)
    assert all(c > 0 for c in model.coef[1:])


def make_router():
    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft"), rng=random.Random(3), clock=lambda: 0.0)
    r.add_worker(1, total_kv_blocks=1000)
    r.add_worker(2, total_kv_blocks=1000)
    return r


def test_cache_hit_wins_when_loads_are_equal():
    r = make_router()
    store_prompt(r, 2, LONG)
    sel = r.select(LONG + [7, 8, 9, 10])
    assert sel.worker_id == 2 and sel.overlap_blocks == 100 and sel.features is not None


def test_queued_prefill_outweighs_a_small_hit():
    r = make_router()
    store_prompt(r, 2, LONG[:16])  # 4 cached blocks on worker 2...
    for i in range(6):  # ...which has 6 x 4,000 tokens of prefill queued
        sel = r.select(list(range(10_000 + i * 4000, 14_000 + i * 4000)), allowed=[2])
        r.add_request(f"q{i}", sel, list(range(10_000 + i * 4000, 14_000 + i * 4000)))
    assert r.select(LONG).worker_id == 1


def test_first_token_teaches_the_model():
    now = [0.0]
    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft"), clock=lambda: now[0])
    r.add_worker(1, total_kv_blocks=1000)
    for i in range(16):
        sel = r.select(LONG, request_id=f"r{i}")
        r.add_request(f"r{i}", sel, LONG)
        now[0] += 0.25
        assert r.mark_prefill_complete(f"r{i}")
        r.free(f"r{i}")
    assert r.costs.ttft.observations == 16 and r.costs.ttft.coef != list(PRIOR)
    assert r.stats()["cost_model"] == "ttft"


def test_output_blocks_are_booked_from_max_tokens_and_released():
    r = make_router()
    sel = r.select(LONG)
    r.add_request("a", sel, LONG, max_tokens=40)  # 400 prompt tokens + 40 = 10 more blocks of 4
    key = (sel.worker_id, 0)
    assert r.active.active_blocks(key) == 100 + 10
    r.free("a")
    assert r.active.active_blocks(key) == 0
    off = KvRouter(BS, KvRouterConfig(router_cost_model="ttft", router_track_output_blocks=False))
    off.add_worker(1)
    off.add_request("b", off.select(LONG), LONG, max_tokens=40)
    assert off.active.active_blocks((1, 0)) == 100


def test_a_burst_of_one_prefix_splits_over_idle_workers_then_joins_the_prefills_under_way():
    r = make_router()
    burst = [LONG + [9000 + i] * 4 for i in range(6)]  # one system prompt, nothing indexed yet
    first = r.select(burst[0], request_id="b0")
    r.add_request("b0", first, burst[0])
    # The other worker is idle: its cold prefill starts at once, while joining the one under way waits
    # for that step and then its own, so the prefix is worth copying there.
    second = r.select(burst[1], request_id="b1")
    assert second.worker_id != first.worker_id
    r.add_request("b1", second, burst[1])
    # Both now prefill it: the rest of the burst joins those prefills (4 new tokens each, not 404).
    rest = []
    for i in range(2, 6):
        choice = r.select(burst[i], request_id=f"b{i}")
        assert choice.prefill_tokens == 4
        r.add_request(f"b{i}", choice, burst[i])
        rest.append(choice.worker_id)
    assert sorted(rest) == [1, 1, 2, 2]
    classic = KvRouter(BS, KvRouterConfig(router_cost_model="ttft", router_inflight_prefix_credit=False),
                       rng=random.Random(3))
    classic.add_worker(1, total_kv_blocks=1000)
    classic.add_worker(2, total_kv_blocks=1000)
    classic.add_request("b0", classic.select(burst[0], request_id="b0"), burst[0])
    assert classic.select(burst[1]).prefill_tokens is None


def test_an_idle_worker_takes_no_copy_without_the_amortization():
    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft", router_shared_prefix_amortization=False),
                 rng=random.Random(3), clock=lambda: 0.0)
    r.add_worker(1, total_kv_blocks=1000)
    r.add_worker(2, total_kv_blocks=1000)
    burst = [LONG + [9000 + i] * 4 for i in range(2)]
    first = r.select(burst[0], request_id="b0")
    r.add_request("b0", first, burst[0])
    assert r.select(burst[1], request_id="b1").worker_id == first.worker_id


def test_a_lagging_load_report_does_not_push_a_prefix_off_its_holder():
    from dynamo.llm.kv_events.protocol import LoadMetrics

    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft"), rng=random.Random(3))
    r.add_worker(1, total_kv_blocks=64)
    r.add_worker(2, total_kv_blocks=64)
    prefix = list(range(24))  # 6 blocks, cached on worker 2, whose last report still counts them active
    store_prompt(r, 2, prefix)
    r.update_metrics(LoadMetrics(worker_id=2, kv_active_blocks=40, kv_total_blocks=64))
    assert r.select(prefix + list(range(500, 540))).worker_id == 2


def test_a_worker_of_unknown_size_is_not_taken_for_an_empty_one():
    # The router service learnt one worker's KV size and not yet the other's: the unknown one must be
    # measured like its peer, or its bookings cost nothing and it wins over the prefix holder.
    r = KvRouter(BS, KvRouterConfig(), rng=random.Random(3))
    r.add_worker(1, total_kv_blocks=64)
    r.add_worker(2)
    prompt = list(range(28))  # 7 blocks, 6 of them cached on worker 1
    store_prompt(r, 1, prompt[:24])
    sel = r.select(prompt)
    assert sel.worker_id == 1 and sel.overlap_blocks == 6 and sel.features is not None


def test_tuning_dynamos_cost_selects_it():
    # ttft is the default; a deployment or request that tunes Dynamo's weight/temperature gets Dynamo's cost
    default, weighted, warm = (KvRouter(BS, KvRouterConfig(**kw), rng=random.Random(3)) for kw in
                               ({}, {"overlap_score_weight": 2.0}, {"router_temperature": 0.5}))
    for r in (default, weighted, warm):
        r.add_worker(1, total_kv_blocks=1000)
    assert default.select(LONG).features is not None
    assert default.select(LONG, override={"overlap_score_weight": 0.5}).features is None
    assert weighted.select(LONG).features is None and warm.select(LONG).features is None
    assert default.stats()["cost_model"] == "ttft"


def agents_on_one_worker(amortize: bool, decoding: int) -> KvRouter:
    """Worker 2 holds one 400-token system prompt that `decoding` agents are answering from."""
    r = KvRouter(BS, KvRouterConfig(router_cost_model="ttft", router_shared_prefix_amortization=amortize),
                 rng=random.Random(3), clock=lambda: 0.0)
    r.add_worker(1, total_kv_blocks=10_000)  # room for them all: the decode load shows in the batch, not the KV
    r.add_worker(2, total_kv_blocks=10_000)
    store_prompt(r, 2, LONG)
    for i in range(decoding):
        prompt = LONG + [5000 + i] * 40
        sel = r.select(prompt, request_id=f"agent{i}", allowed=[2])
        r.add_request(f"agent{i}", sel, prompt, max_tokens=200)
        r.active.mark_prefill_completed(f"agent{i}")  # (the cost model learns nothing from a stopped clock)
    return r


def test_a_prefix_many_agents_decode_from_is_copied_to_an_idle_worker():
    """One system prompt for every agent: charged in full, its prefill keeps every new agent on the
    worker that holds it, whatever that worker's decode load; priced as an investment shared by the
    agents holding it, the next one goes to the idle worker (which then holds it too)."""
    newcomer = LONG + [7000] * 40
    assert agents_on_one_worker(False, decoding=12).select(newcomer).worker_id == 2
    assert agents_on_one_worker(True, decoding=12).select(newcomer).worker_id == 1


def test_one_decoding_sharer_does_not_move_a_prefix():
    newcomer = LONG + [7000] * 40
    assert agents_on_one_worker(True, decoding=1).select(newcomer).worker_id == 2


def test_decode_step_is_a_cached_requests_ttft_over_one_and_a_half_steps():
    model = TtftModel()
    c0, _, c2, c3 = PRIOR
    assert model.decode_step(features(0, 0.5, 16)) == pytest.approx((c0 + c2 * 0.5 + c3 * 16) / 1.5)
    assert model.decode_step(features(0, 3.0, 16)) == model.decode_step(features(0, 1.0, 16))  # full is full
