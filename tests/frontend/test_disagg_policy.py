"""`--router-conditional-disagg-config` parsing (DisaggPolicy); the policy's effect on real
workers is tested end to end in tests/e2e/test_disagg_mocker.py."""

from __future__ import annotations

import pytest

from dynamo.frontend.disagg import DisaggPolicy


def test_conditional_policy_config():
    policy = DisaggPolicy.from_config(False, True, {"eff_isl_threshold": 10, "max_inflight_prefills_per_worker": 2})
    assert (policy.conditional, policy.eff_isl_threshold, policy.max_inflight_prefills_per_worker) == (True, 10, 2)
    assert DisaggPolicy.from_config(True, False, None).eff_isl_threshold == 2048
    with pytest.raises(ValueError):
        DisaggPolicy.from_config(False, True, {"eff_isl_threshold": -1})
    with pytest.raises(Exception):
        DisaggPolicy.from_config(False, True, {"eff_isl_threshold": "many"})
