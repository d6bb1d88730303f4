"""KvRouter end to end: events mode, approximate mode, load-only, busy, config."""

import argparse
import random

import pytest

from dynamo.router.config import KvMode, KvRouterConfig, RouterConfigOverride
from dynamo.llm.kv_events.hashing import block_hashes, sequence_hashes
from dynamo.router.kv_router import AllWorkersBusy, KvRouter, NoWorkers
from dynamo.llm.kv_events.protocol import KvCacheEvent, KvStored, LoadMetrics, RouterEvent, StoredBlock
from dynamo.runtime.config import add_arguments, from_namespace

BS = 4
PROMPT = list(range(32))  # 8 blocks


def store_prompt(router, worker, tokens, event_id=0, dp=0, tier="device"):
    local = block_hashes(tokens, BS)
    ext = sequence_hashes(local)  # any deterministic engine hash will do
    data = KvStored(parent_hash=None, blocks=[StoredBlock(block_hash=e, tokens_hash=h) for e, h in zip(ext, local)])
    return router.apply_event(RouterEvent(worker_id=worker, event=KvCacheEvent(event_id=event_id, data=data,
                                                                                 dp_rank=dp), storage_tier=tier))


def make(**cfg):
    """A router with NVIDIA Dynamo's classic cost, whose logits these tests check exactly."""
    clock = cfg.pop("clock", None)
    cfg.setdefault("router_cost_model", "dynamo")
    cfg.setdefault("router_inflight_prefix_credit", False)
    return KvRouter(BS, KvRouterConfig(**cfg), rng=random.Random(7), clock=clock)


def test_events_mode_lifecycle():
    r = make()
    assert r.mode == KvMode.KV_EVENTS == "kv-events"
    for w in (1, 2, 3):
        r.add_worker(w)
    assert store_prompt(r, 2, PROMPT[:24]) == "ok"
    assert r.overlap_scores(PROMPT) == {(2, 0): 6}
    sel = r.select(PROMPT, request_id="a")
    assert (sel.worker_id, sel.dp_rank, sel.overlap_blocks, sel.required_blocks) == (2, 0, 6, 8)
    assert sel.logits[(2, 0)] == 8 + (32 - 24) / BS  # 8 new active blocks + 2 prefill blocks
    assert sel.logits[(1, 0)] == 8 + 32 / BS
    r.add_request("a", sel, PROMPT)
    stats = r.stats()
    assert stats["workers"]["2:0"] == {"active_blocks": 8, "active_prefill_tokens": 8, "requests": 1}
    assert stats["kv_hit_rate"] == 6 / 8
    assert stats["events_applied"] == {"stored": {"ok": 1}}
    assert stats["last_decision_us"] > 0
    assert r.mark_prefill_complete("a")
    assert r.stats()["workers"]["2:0"]["active_prefill_tokens"] == 0
    assert r.free("a") and not r.free("a")
    assert r.stats()["workers"]["2:0"]["active_blocks"] == 0


def test_load_spreads_identical_prompts_without_cache():
    r = make()
    for w in (1, 2):
        r.add_worker(w)
    chosen = []
    for i in range(4):
        tokens = [1000 * i + t for t in range(16)]
        sel = r.select(tokens, request_id=str(i))
        r.add_request(str(i), sel, tokens)
        chosen.append(sel.worker_id)
    assert sorted(chosen) == [1, 1, 2, 2]


def test_allowed_override_and_errors():
    r = make()
    with pytest.raises(NoWorkers):
        r.select(PROMPT)
    r.add_worker(1)
    r.add_worker(2, dp_size=2)
    store_prompt(r, 1, PROMPT)
    assert r.select(PROMPT).worker_id == 1
    assert r.select(PROMPT, allowed=[2]).worker_id == 2
    with pytest.raises(NoWorkers):
        r.select(PROMPT, allowed=[9])
    sel = r.select(PROMPT, override=RouterConfigOverride(overlap_score_weight=0.0))
    assert sel.logits[(1, 0)] == sel.logits[(2, 1)] == 8
    # Temperature 1: softmax over normalized logits; the prefix holder is likeliest, the others still drawn.
    picks = [r.select(PROMPT, override={"router_temperature": 1.0}) for _ in range(300)]
    counts = {key: sum((p.worker_id, p.dp_rank) == key for p in picks) for key in ((1, 0), (2, 0), (2, 1))}
    assert sum(counts.values()) == 300 and min(counts.values()) > 0, counts
    assert counts[(1, 0)] > max(counts[(2, 0)], counts[(2, 1)]), counts


def test_dp_ranks_are_separate_candidates():
    r = make()
    r.add_worker(5, dp_size=2)
    store_prompt(r, 5, PROMPT, dp=1)
    sel = r.select(PROMPT)
    assert (sel.worker_id, sel.dp_rank, sel.overlap_blocks) == (5, 1, 8)


def test_busy_thresholds_reject_and_reported_metrics():
    r = make(active_prefill_tokens_threshold=40)
    r.add_worker(1)
    r.add_worker(2)
    for rid in ("a", "b", "c"):
        sel = r.select(PROMPT, request_id=rid)
        r.add_request(rid, sel, PROMPT)
    assert r.select(PROMPT).worker_id == sel.worker_id ^ 3  # the one at 32 tokens is not busy
    r.add_request("d", r.select(PROMPT, request_id="d"), PROMPT)  # both at 64 > 40 tokens
    with pytest.raises(AllWorkersBusy):
        r.select(PROMPT)
    assert r.stats()["busy_rejections"] == 1
    r.mark_prefill_complete("a")
    r.mark_prefill_complete("b")
    r.mark_prefill_complete("c")
    r.mark_prefill_complete("d")
    r.select(PROMPT)
    r2 = make(active_decode_blocks_threshold=0.5)
    r2.add_worker(1, total_kv_blocks=1000)
    r2.update_metrics(LoadMetrics(worker_id=1, kv_active_blocks=900, kv_total_blocks=1000))
    with pytest.raises(AllWorkersBusy):
        r2.select(PROMPT)


def test_approximate_mode_learns_from_decisions_and_expires():
    now = [0.0]
    r = make(use_kv_events=False, router_ttl_secs=60, clock=lambda: now[0])
    assert r.mode == "approximate"
    r.add_worker(1)
    r.add_worker(2)
    sel = r.select(PROMPT, request_id="a")
    r.add_request("a", sel, PROMPT)
    r.free("a")
    assert r.overlap_scores(PROMPT) == {(sel.worker_id, 0): 8}
    again = r.select(PROMPT, request_id="b")
    assert (again.worker_id, again.overlap_blocks) == (sel.worker_id, 8)
    assert store_prompt(r, 2, PROMPT) == "ignored"
    now[0] = 61
    assert r.overlap_scores(PROMPT) == {}


def test_load_only_mode_ignores_cache():
    r = make(overlap_score_weight=0.0)
    assert r.mode == "load-only"
    r.add_worker(1)
    assert store_prompt(r, 1, PROMPT) == "ignored"
    assert r.select(PROMPT).overlap_blocks == 0


def test_remove_worker_returns_inflight():
    r = make()
    r.add_worker(1)
    store_prompt(r, 1, PROMPT)
    r.add_request("a", r.select(PROMPT, request_id="a"), PROMPT)
    assert r.remove_worker(1) == ["a"]
    assert r.overlap_scores(PROMPT) == {}
    with pytest.raises(NoWorkers):
        r.select(PROMPT)


def test_lora_prompts_do_not_share_cache():
    r = make()
    r.add_worker(1)
    store_prompt(r, 1, PROMPT)
    assert r.select(PROMPT, lora_name="adapter").overlap_blocks == 0


def test_config_flags_env_and_aliases():
    parser = argparse.ArgumentParser()
    add_arguments(parser, KvRouterConfig)
    cfg = from_namespace(KvRouterConfig, parser.parse_args([]), {})
    assert cfg == KvRouterConfig() and cfg.router_max_tree_size == 2**20 and cfg.mode == KvMode.KV_EVENTS
    ns = parser.parse_args(["--router-kv-overlap-score-weight", "0.5", "--no-kv-events",
                            "--active-decode-blocks-threshold", "0.9", "--router-temperature", "0.3"])
    cfg = from_namespace(KvRouterConfig, ns, {})
    assert (cfg.overlap_score_weight, cfg.use_kv_events, cfg.active_decode_blocks_threshold) == (0.5, False, 0.9)
    assert cfg.mode == "approximate"
    env = {"DYN_OVERLAP_SCORE_WEIGHT": "0", "DYN_ROUTER_USE_KV_EVENTS": "false", "DYN_ROUTER_TEMPERATURE": "0.7"}
    cfg = from_namespace(KvRouterConfig, parser.parse_args(["--router-kv-events"]), env)
    assert (cfg.overlap_score_weight, cfg.use_kv_events, cfg.router_temperature) == (0.0, True, 0.7)
    with pytest.raises(ValueError):
        KvRouterConfig(router_prune_target_ratio=0).validate()


def test_prompt_hashed_once_per_select_add_pair(monkeypatch):
    import dynamo.router.prefix_match as kv

    calls = []
    real = kv.block_hashes
    monkeypatch.setattr(kv, "block_hashes", lambda *a: calls.append(a) or real(*a))
    r = make()
    r.add_worker(1)
    sel = r.select(PROMPT, request_id="a")
    r.add_request("a", sel, PROMPT)
    assert len(calls) == 1
    r.select(PROMPT, request_id="b")
    r.select(PROMPT, request_id="b", lora_name="x")  # different namespace: rehash
    assert len(calls) == 3


def test_blocks_held_only_offloaded_count_at_their_tiers_weight():
    """Dynamo's host/disk cache-hit weights: a prefix in host memory is copied back, not recomputed."""
    r = make()
    for w in (1, 2, 3):
        r.add_worker(w)
    assert store_prompt(r, 1, PROMPT[:8]) == "ok"  # 2 blocks on the device
    assert store_prompt(r, 1, PROMPT[:32], event_id=1, tier="host_pinned") == "ok"  # all 8 offloaded to host
    assert store_prompt(r, 2, PROMPT[:32], tier="disk") == "ok"  # all 8 on disk only
    sel = r.select(PROMPT, request_id="a")
    # prefill blocks left: worker 1: 8 - (2 + 0.75 * 6 = 6.5 -> 7 blocks) = 1; worker 2: 8 - 0.25 * 8 = 6; worker 3: 8
    assert sel.logits[(1, 0)] == 8 + 1 and sel.logits[(2, 0)] == 8 + 6 and sel.logits[(3, 0)] == 8 + 8
    assert (sel.worker_id, sel.overlap_blocks) == (1, 2)  # the hit rate it reports is the device's
    off = make(router_host_cache_hit_weight=0.0, router_disk_cache_hit_weight=0.0)
    for w in (1, 2, 3):
        off.add_worker(w)
    store_prompt(off, 1, PROMPT[:32], tier="host_pinned")
    assert off.select(PROMPT).logits[(1, 0)] == 8 + 8  # weights 0: offloaded blocks are no hit
    with pytest.raises(ValueError, match="between 0 and 1"):
        make(router_host_cache_hit_weight=1.5)


def test_a_selection_times_its_phases_and_hashes_a_prompt_once_per_request():
    r = make()
    for w in (1, 2):
        r.add_worker(w)
    store_prompt(r, 2, PROMPT[:24])
    first = r.select(PROMPT * 64, request_id="a").overhead  # 512 blocks: hashing takes measurable time
    assert first is not None and first.block_hashing > 0 and first.seq_hashing > 0
    assert min(first) >= 0
    assert first.block_hashing + first.seq_hashing + first.find_matches + first.scheduling <= first.total + 1e-9
    again = r.select(PROMPT * 64, request_id="a").overhead  # the booking's second look reuses the hashes
    assert again is not None and (again.block_hashing, again.seq_hashing) == (0.0, 0.0)
    assert again.total > 0


def test_a_selection_given_its_prefix_match_reuses_that_lookup():
    """`match_prefix` is one decision's lookup: the uncached prompt per allowed set comes from it, and a
    selection handed it chooses as one that looks the prompt up itself, reporting that lookup's phases."""
    r = make()
    r.add_worker(1)
    r.add_worker(2)
    assert store_prompt(r, 1, PROMPT[:16]) == "ok"  # 4 of the prompt's 8 blocks on worker 1
    match = r.match_prefix(PROMPT, "a")
    assert match.overlaps == {(1, 0): 4}
    assert (r.new_prefill_tokens(match), r.new_prefill_tokens(match, [2])) == (16, 32)
    given = r.select(PROMPT, request_id="a", match=match)
    looked_up = r.select(PROMPT, request_id="b")
    assert (given.worker_id, given.overlap_blocks) == (looked_up.worker_id, looked_up.overlap_blocks) == (1, 4)
    assert given.logits == looked_up.logits
    assert given.overhead.find_matches == match.lookup_seconds
    assert given.overhead.block_hashing == match.hashed.seconds[0] > 0  # hashed once, for the match


def test_output_of_a_worker_that_left_does_not_restart_its_step_clock():
    r = make()
    r.add_worker(1)
    r.add_request("a", r.select(PROMPT, request_id="a"), PROMPT)
    r.output("a")
    assert (1, 0) in r.costs.steps._last
    r.remove_worker(1)  # its clock is forgotten; "a" still runs there
    r.output("a")
    assert (1, 0) not in r.costs.steps._last
