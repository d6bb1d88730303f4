"""NVIDIA Dynamo 1.6.1's cost knobs (dynamo_cost.py): each moves the cost as its flag says, the
defaults give the classic cost, and a KV router configured with any of them routes by it."""

from __future__ import annotations

import pytest

from dynamo.router.dynamo_cost import DynamoCostKnobs, dynamo_costs
from dynamo.router.selector import compute_logits
from tests.router.test_kv_router import BS, PROMPT, make, store_prompt

A, B = (1, 0), (2, 0)


def costs(potentials, queued=None, requests=None, isl=32, **knobs):
    queued, requests = queued or {}, requests or {}
    return dynamo_costs(potentials, lambda k: queued.get(k, 0), lambda k: requests.get(k, 0), isl, BS,
                        DynamoCostKnobs(**knobs))


# A holds 24 of the 32 prompt tokens (8 left to prefill), B nothing; both have 8 blocks after booking.
POTENTIALS = {A: (8, 8), B: (8, 32)}


def test_the_defaults_are_the_classic_cost():
    assert DynamoCostKnobs().default
    assert costs(POTENTIALS) == compute_logits(POTENTIALS, BS, 1.0) == {A: 8 + 8 / BS, B: 8 + 32 / BS}


def test_credit_scales_what_a_cache_hit_is_worth_and_clamps_at_zero():
    assert costs(POTENTIALS, overlap_score_credit=0.0) == {A: 8 + 32 / BS, B: 8 + 32 / BS}  # caches ignored
    assert costs(POTENTIALS, overlap_score_credit=0.5)[A] == 8 + (32 - 12) / BS
    assert costs(POTENTIALS, overlap_score_credit=2.0)[A] == 8  # 32 - 48 < 0: no negative prefill


def test_scale_weighs_the_prefill_term_and_requests_add_decode_cost():
    assert costs(POTENTIALS, prefill_load_scale=3.0) == {A: 8 + 3 * 8 / BS, B: 8 + 3 * 32 / BS}
    got = costs(POTENTIALS, requests={A: 4}, decode_active_request_weight=2.5)
    assert got == {A: 8 + 8 / BS + 10, B: 8 + 32 / BS}


def test_decay_takes_the_pull_from_a_cache_rich_worker_with_a_backlog():
    # A caches the prompt but has 64 prefill tokens queued (two prompts' worth more than B).
    potentials = {A: (8, 64 + 8), B: (8, 32)}
    queued = {A: 64}
    plain = costs(potentials, queued)
    assert plain[A] == 8 + (64 + 8) / BS
    decayed = costs(potentials, queued, overlap_score_credit_decay=1.0)  # credit / (1 + 2)
    assert decayed[A] == 8 + (64 + 32 - 24 / 3) / BS and decayed[B] == plain[B]


def test_without_prefill_tracking_there_is_no_prefill_term():
    got = dynamo_costs({A: (8, 0), B: (8, 0)}, lambda k: 0, lambda k: 0, 32, BS,
                       DynamoCostKnobs(overlap_score_credit=0.5), tracks_prefill=False)
    assert got == {A: 8, B: 8}


def test_a_router_with_a_knob_set_routes_by_dynamos_cost():
    r = make(router_cost_model="ttft", router_kv_overlap_score_credit=0.0)  # knobs win over ttft
    assert r.mode == "load-only"
    for w in (1, 2):
        r.add_worker(w)
    assert store_prompt(r, 1, PROMPT[:24]) == "ignored"  # no cache credit: no index either
    sel = r.select(PROMPT, request_id="a")
    assert sel.logits == {A: 8 + 32 / BS, B: 8 + 32 / BS} and sel.features is None  # Dynamo's units, not a TTFT


def test_a_decode_request_weight_spreads_requests_over_equal_workers():
    r = make(router_cost_model="ttft", router_decode_active_request_weight=100.0, router_track_active_blocks=False)
    for w in (1, 2):
        r.add_worker(w)
    picks = []
    for i in range(4):
        sel = r.select(PROMPT, request_id=str(i))
        r.add_request(str(i), sel, PROMPT)
        picks.append(sel.worker_id)
    assert sorted(picks) == [1, 1, 2, 2]


@pytest.mark.parametrize("knob", ["router_kv_overlap_score_credit", "router_prefill_load_scale"])
def test_knobs_at_their_default_keep_the_ttft_cost(knob):
    r = make(router_cost_model="ttft", **{knob: 1.0})
    r.add_worker(1)
    assert r.select(PROMPT, request_id="a").features is not None  # the ttft model's features: its cost ran
