"""`--router-conditional-disagg-config` parsing (DisaggPolicy) and the conditional skip decision
over a real prefill pool; the policy's effect on real workers is tested end to end in
tests/e2e/test_disagg_mocker.py."""

from __future__ import annotations

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import PreprocessedRequest
from dynamo.router.policy import Role, RoundRobinPolicy, WorkerInfo
from dynamo.runtime.records import EndpointId


def test_conditional_policy_config():
    policy = DisaggPolicy.from_config(False, True, {"eff_isl_threshold": 10, "max_inflight_prefills_per_worker": 2})
    assert (policy.conditional, policy.eff_isl_threshold, policy.max_inflight_prefills_per_worker) == (True, 10, 2)
    assert DisaggPolicy.from_config(True, False, None).eff_isl_threshold == 2048
    with pytest.raises(ValueError):
        DisaggPolicy.from_config(False, True, {"eff_isl_threshold": -1})
    with pytest.raises(msgspec.ValidationError):
        DisaggPolicy.from_config(False, True, {"eff_isl_threshold": "many"})


def model_with_prefill_workers(*instance_ids: int) -> ModelEntry:
    card = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096,
                               kv_cache_block_size=16, worker_type="prefill")
    entry = ModelEntry("m", None, card)  # type: ignore[arg-type]  # no pipeline: the decision never tokenizes
    for iid in instance_ids:
        entry.workers[iid] = WorkerInfo(iid, EndpointId("dynamo", "prefill", "generate"), card, f"127.0.0.1:{iid}")
    return entry


def test_prefill_pool_is_busy_only_when_every_worker_is_at_the_limit():
    entry = model_with_prefill_workers(1, 2)
    policy = DisaggPolicy.from_config(False, True, {"eff_isl_threshold": 8, "max_inflight_prefills_per_worker": 2})
    orchestrator = PrefillOrchestrator(None, RoundRobinPolicy(), policy,  # type: ignore[arg-type]  # no sends
                                       DisaggMetrics(CollectorRegistry(), "t"))
    long_prompt = PreprocessedRequest(request_id="r", model="m", token_ids=list(range(32)))

    def reason() -> str | None:
        return orchestrator._skip_reason(entry, entry.pool(Role.PREFILL), long_prompt)

    assert reason() is None
    orchestrator.inflight.update({1: 2, 2: 1})  # as booked by prefill(): worker 2 still has room
    assert reason() is None
    orchestrator.inflight[2] = 2
    assert reason() == "prefill_pool_busy"
    short = PreprocessedRequest(request_id="s", model="m", token_ids=[1, 2])
    assert orchestrator._skip_reason(entry, entry.pool(Role.PREFILL), short) == "short_prompt"
    orchestrator.policy = DisaggPolicy.from_config(False, True, {"eff_isl_threshold": 8})  # 0: no limit
    orchestrator.inflight.update({1: 100, 2: 100})
    assert reason() is None
