"""Request-protocol helpers that engines share."""

from dynamo.llm.protocol import STRICT_TIER, RoutingHints, engine_priority


def test_engine_priority_runs_higher_hints_first_in_either_convention():
    low, high = RoutingHints(priority=1), RoutingHints(priority=7.6)
    assert engine_priority(high, lower_first=False) == 8 > engine_priority(low, lower_first=False) == 1
    assert engine_priority(high, lower_first=True) == -8 < engine_priority(low, lower_first=True) == -1


def test_strict_tier_outranks_any_soft_priority():
    tiered, soft = RoutingHints(strict_priority=1, priority=-5), RoutingHints(priority=10**9)
    assert engine_priority(tiered, lower_first=False) == STRICT_TIER - 5
    assert engine_priority(tiered, lower_first=False) > engine_priority(soft, lower_first=False)
    assert engine_priority(tiered, lower_first=True) < engine_priority(soft, lower_first=True)


def test_no_hints_is_the_engine_default():
    assert engine_priority(None, lower_first=True) == 0
    assert engine_priority(RoutingHints(backend_instance_id=3), lower_first=False) == 0
