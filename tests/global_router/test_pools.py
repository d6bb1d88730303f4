"""The global router's plan: Dynamo's config files read as Dynamo reads them (grids, clamping, the middle
of a range for an absent target, priority overrides, retry order), and refused, naming the key, where
Dynamo refuses them."""

from __future__ import annotations

import copy
import json

import pytest

from dynamo.global_router.pools import PoolConfigError, load_plan, parse_plan

# Dynamo's examples/global_planner/global-planner-mocker-test.yaml ConfigMap (namespaces filled in)
DISAGG = {
    "num_prefill_pools": 2, "num_decode_pools": 2,
    "prefill_pool_dynamo_namespaces": ["ns-gp-prefill-0", "ns-gp-prefill-1"],
    "decode_pool_dynamo_namespaces": ["ns-gp-decode-0", "ns-gp-decode-1"],
    "prefill_pool_selection_strategy": {"ttft_min_ms": 10, "ttft_max_ms": 3000, "ttft_resolution": 2,
                                        "isl_min": 0, "isl_max": 32000, "isl_resolution": 2,
                                        "prefill_pool_mapping": [[0, 1], [0, 1]]},
    "decode_pool_selection_strategy": {"itl_min_ms": 10, "itl_max_ms": 500, "itl_resolution": 2,
                                       "context_length_min": 0, "context_length_max": 32000,
                                       "context_length_resolution": 2, "decode_pool_mapping": [[0, 1], [0, 1]]},
}
# examples/global_planner/local/agg_config.json
AGG = {"mode": "agg", "enable_priority_retry": False, "num_agg_pools": 2,
       "agg_pool_dynamo_namespaces": ["agg_pool_0", "agg_pool_1"],
       "agg_pool_selection_strategy": {"ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 2,
                                       "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1,
                                       "agg_pool_mapping": [[0], [1]], "priority_overrides": []}}


def with_changes(base: dict, path: str, value) -> dict:
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


def test_dynamo_examples_read_as_dynamo_reads_them(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(DISAGG))
    plan = load_plan(path)
    assert plan.mode == "disagg" and not plan.retry and plan.warnings == ()
    prefill, decode = plan.pools["prefill"], plan.pools["decode"]
    assert prefill.select({"isl": 100, "ttft": 100}) == 0  # tight TTFT: pool 0
    assert prefill.select({"isl": 100, "ttft": 2000}) == 1
    assert prefill.select({"isl": 100}) == 1  # no target: the middle of 10..3000 (1505) is the upper band
    assert decode.select({"context_length": 40000, "itl": 5}) == 0  # both clamped into the grid
    assert decode.select({"context_length": -1, "itl": 10_000}) == 1
    agg = parse_plan(AGG).pools["agg"]
    assert [agg.select({"ttft": t}) for t in (100, 900, None, 499.9, 500)] == [0, 1, 1, 0, 1]


def test_three_axis_agg_grid_and_priority_overrides():
    strategy = {**AGG["agg_pool_selection_strategy"], "isl_min": 0, "isl_max": 8000, "isl_resolution": 2,
                "agg_pool_mapping": [[[0], [1]], [[1], [1]]],
                "priority_overrides": [{"min_priority": 10, "max_priority": 100, "target_pool": 0}]}
    agg = parse_plan({**AGG, "agg_pool_selection_strategy": strategy}).pools["agg"]
    assert agg.select({"isl": 100, "ttft": 100}) == 0
    assert agg.select({"isl": 6000, "ttft": 100}) == 1  # a long prompt: the other plane
    assert agg.select({"isl": 6000, "ttft": 100}, priority=50) == 0  # the override wins over the grid
    assert agg.select({"isl": 6000, "ttft": 100}, priority=5) == 1
    assert agg.select({"isl": 6000, "ttft": 100}, priority=100) == 0  # bounds inclusive


def test_retry_order_walks_faster_pools_slowest_first():
    plan = parse_plan({**DISAGG, "enable_priority_retry": True,
                       "prefill_pool_priorities": [0, 1], "decode_pool_priorities": [2, 2]})
    assert plan.retry
    three = parse_plan({**AGG, "num_agg_pools": 4, "agg_pool_dynamo_namespaces": ["a", "b", "c", "d"],
                        "agg_pool_priorities": [0, 1, 2, 1]}).pools["agg"]
    assert three.retry_order(2, True) == [2, 1, 3, 0]  # priority 1 (b, d in pool order), then 0
    assert three.retry_order(0, True) == [0]  # the fastest has nothing faster
    assert three.retry_order(2, False) == [2]
    assert plan.pools["decode"].retry_order(1, True) == [1]  # equal priorities are not faster


def test_older_key_spellings_are_read_with_a_warning():
    strategy = {k.replace("_ms", ""): v for k, v in AGG["agg_pool_selection_strategy"].items()}
    plan = parse_plan({**AGG, "agg_pool_selection_strategy": strategy, "prefill_pool_dynamo_namespaces": ["x"]})
    assert plan.pools["agg"].select({"ttft": 900}) == 1
    assert any("ttft_min is deprecated" in w for w in plan.warnings)
    assert any("prefill_pool_dynamo_namespaces: not read in agg mode" in w for w in plan.warnings)


@pytest.mark.parametrize("path, value, says", [
    ("mode", "hybrid", "unknown mode"),
    ("num_prefill_pools", 3, "num_prefill_pools (3) does not match"),
    ("decode_pool_dynamo_namespaces", KeyError, "decode_pool_dynamo_namespaces required"),
    ("prefill_pool_selection_strategy.prefill_pool_mapping", [[0, 1]], "prefill_pool_mapping: 1 entries, "
                                                                         "isl_resolution is 2"),
    ("prefill_pool_selection_strategy.prefill_pool_mapping", [[0, 1], [0, 2]], "prefill_pool_mapping[1][1]: "
                                                                               "invalid pool index 2"),
    ("decode_pool_selection_strategy.itl_max_ms", 5, "itl_min_ms (10) must be less than itl_max_ms (5)"),
    ("decode_pool_selection_strategy.itl_resolution", 0, "itl_resolution must be a positive integer"),
    ("prefill_pool_selection_strategy.ttft_min_ms", "10ms", "ttft_min_ms must be a number"),
    ("prefill_pool_selection_strategy.isl_min", KeyError, "isl_min is required"),
    ("prefill_pool_priorities", [0, "1"], "prefill_pool_priorities[1] must be an integer"),
    ("decode_pool_priorities", [0], "decode_pool_priorities length (1) does not match number of pools (2)"),
    ("enable_priority_retry", "yes", "enable_priority_retry must be a boolean"),
    ("prefill_pool_selection_strategy.priority_overrides", [{"min_priority": 5, "max_priority": 1, "target_pool": 0}],
     "min_priority (5) must be <= max_priority (1)"),
    ("prefill_pool_selection_strategy.priority_overrides", [{"min_priority": 1, "max_priority": 5, "target_pool": 7}],
     "invalid target_pool 7"),
    ("prefill_pool_selection_strategy.priority_overrides", [{"min_priority": 1, "max_priority": 5}],
     "exactly min_priority, max_priority and target_pool"),
])
def test_a_config_dynamo_refuses_is_refused_naming_the_key(path, value, says):
    with pytest.raises(PoolConfigError, match=None) as err:
        parse_plan(with_changes(DISAGG, path, value))
    assert says in str(err.value)


def test_agg_isl_keys_go_together():
    strategy = {**AGG["agg_pool_selection_strategy"], "isl_min": 0}
    with pytest.raises(PoolConfigError, match="isl_min, isl_max, and isl_resolution must be configured together"):
        parse_plan({**AGG, "agg_pool_selection_strategy": strategy})


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(PoolConfigError, match="cannot read the global router config"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PoolConfigError, match="is not JSON"):
        load_plan(tmp_path / "bad.json")
