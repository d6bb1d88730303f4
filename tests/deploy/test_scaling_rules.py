"""The HPA's replica arithmetic that `dynamo.deploy run` applies to a file's HPAs and KEDA
ScaledObjects: tolerance, stabilization windows, scaling policies and bounds, on a given clock."""

from __future__ import annotations

from dynamo.deploy.scaling_rules import DEFAULT_DOWN, DEFAULT_UP, Governor, Policy, Rules, parse_behavior, proposal


def test_the_usage_ratio_moves_replicas_only_outside_the_tolerance():
    assert proposal(4, 1.08) == 4
    assert proposal(4, 0.93) == 4
    assert proposal(2, 1.5) == 3
    assert proposal(5, 0.4) == 2
    assert proposal(3, 10 / (5 * 3)) == 2  # AverageValue: 10 queued, 5 per replica -> ceil(10 / 5)


def test_default_scale_up_doubles_or_adds_four_per_period_whichever_is_more():
    gov = Governor(low=1, high=20)
    assert gov.decide(0, 1, 20) == 5  # +4 pods beats +100%
    assert gov.decide(5, 5, 20) == 5  # 4 added within the last 15 s: the period's limit is used up
    assert gov.decide(16, 5, 20) == 10  # a new period: +100% of 5


def test_default_scale_down_waits_for_the_five_minute_window():
    gov = Governor(low=1, high=10)
    assert gov.decide(0, 6, 6) == 6
    for t in (15, 60, 200, 299):
        assert gov.decide(t, 6, 1) == 6  # 6 was recommended within the window
    assert gov.decide(301, 6, 1) == 1  # every recommendation since t=1 says 1; -100% per 15 s allows it


def test_the_guides_behavior_one_pod_down_per_30s_two_up_per_30s():
    up, down = parse_behavior({
        "scaleDown": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 30}]},
        "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]}})
    assert down == Rules(60.0, (Policy("Pods", 1, 30.0),)) and up.window == 0.0
    gov = Governor(up, down, low=1, high=10)
    assert gov.decide(0, 1, 9) == 3
    assert gov.decide(10, 3, 9) == 3
    assert gov.decide(31, 3, 9) == 5
    assert gov.decide(100, 5, 1) == 4  # the 9s are out of the 60 s window: down, one pod per 30 s
    assert gov.decide(101, 4, 1) == 4
    assert gov.decide(131, 4, 1) == 3


def test_scale_down_is_one_pod_per_period_after_the_window():
    down = Rules(60.0, (Policy("Pods", 1, 30.0),))
    gov = Governor(DEFAULT_UP, down, low=1, high=10)
    assert gov.decide(0, 4, 4) == 4
    assert gov.decide(30, 4, 1) == 4  # 4 still in the 60 s window
    assert gov.decide(61, 4, 1) == 3
    assert gov.decide(70, 3, 1) == 3  # one pod already removed in this 30 s period
    assert gov.decide(92, 3, 1) == 2


def test_out_of_bounds_goes_straight_to_the_bound_and_disabled_never_moves():
    assert Governor(low=1, high=10).decide(0, 12, 12) == 10
    assert Governor(low=2, high=10).decide(0, 1, 1) == 2
    frozen = Governor(DEFAULT_UP, Rules(0.0, DEFAULT_DOWN.policies, "Disabled"), low=1, high=10)
    assert frozen.decide(0, 5, 1) == 5
    assert frozen.decide(0, 5, 8) == 8


def test_min_select_policy_takes_the_smallest_change():
    up = Rules(0.0, (Policy("Percent", 100, 15.0), Policy("Pods", 1, 15.0)), "Min")
    assert Governor(up, DEFAULT_DOWN, low=1, high=20).decide(0, 4, 20) == 5
    assert Governor(DEFAULT_UP, DEFAULT_DOWN, low=1, high=20).decide(0, 4, 20) == 8
