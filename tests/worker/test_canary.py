"""The canary's payload (Dynamo's DYN_HEALTH_CHECK_PAYLOAD: JSON or @file; default: the model's BOS token, one
greedy token) and its health transitions (a failure marks the endpoint notready, the next pass ready again)."""

from __future__ import annotations

import json

import pytest
from prometheus_client import CollectorRegistry

from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.system_server import HealthState
from dynamo.worker.canary import Canary, payload


def test_the_default_payload_is_one_greedy_token_after_the_models_bos(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 128000}))
    req = payload(RuntimeSettings.from_env({}), "m", str(tmp_path))
    assert (req.model, req.token_ids, req.stop_conditions.max_tokens, req.sampling_options.temperature) == \
        ("m", [128000], 1, 0.0)
    assert payload(RuntimeSettings.from_env({}), "m", str(tmp_path / "none")).token_ids == [1]  # Dynamo's fallback


def test_a_configured_payload_as_json_or_a_file(tmp_path):
    given = {"token_ids": [5, 6], "stop_conditions": {"max_tokens": 2}, "prompt": "ignored"}
    req = payload(RuntimeSettings.from_env({"DYN_HEALTH_CHECK_PAYLOAD": json.dumps(given)}), "m", None)
    assert (req.token_ids, req.stop_conditions.max_tokens) == ([5, 6], 2)
    (tmp_path / "hc.json").write_text(json.dumps(given))
    assert payload(RuntimeSettings.from_env({"DYN_HEALTH_CHECK_PAYLOAD": f"@{tmp_path}/hc.json"}), "m",
                   None).token_ids == [5, 6]
    for bad in ("[1, 2]", "{not json", "@/no/such/file", '{"stop_conditions": {"max_tokens": "x"}}'):
        with pytest.raises(ValueError, match="DYN_HEALTH_CHECK_PAYLOAD"):
            payload(RuntimeSettings.from_env({"DYN_HEALTH_CHECK_PAYLOAD": bad}), "m", None)


def test_a_failed_canary_takes_the_endpoint_out_until_one_passes():
    health = HealthState()
    health.endpoints["dyn://ns.backend.generate"] = "ready"
    canary = Canary(None, health, "dyn://ns.backend.generate", None, 10, 3, CollectorRegistry())  # type: ignore
    canary._record("no answer within 3 s")
    assert not health.ready() and canary.failures == 1
    canary._record("no answer within 3 s")
    assert canary.failures == 2
    canary._record(None)
    assert health.ready() and canary.failures == 0


class _Handler:
    """The handler's clocks, set by hand (`RequestHandler`'s fields of the same names)."""

    def __init__(self, inflight: int, last_activity: float, last_progress: float, busy_since: float) -> None:
        self.inflight, self.last_activity, self.last_progress, self.busy_since = \
            inflight, last_activity, last_progress, busy_since

    def stalled_for(self, now: float) -> float:
        return now - max(self.last_progress, self.busy_since) if self.inflight else 0.0


def _canary(handler: _Handler, probed_at: float = 0.0, busy_probes: bool = True) -> Canary:
    canary = Canary(handler, HealthState(), "dyn://ns.backend.generate", None, 10, 3,  # type: ignore[arg-type]
                    CollectorRegistry(), busy_probes=busy_probes)
    canary.probed_at = probed_at
    return canary


def test_an_idle_engine_is_probed_after_the_wait_time():
    assert not _canary(_Handler(0, last_activity=100, last_progress=95, busy_since=90)).due(109)
    assert _canary(_Handler(0, last_activity=100, last_progress=95, busy_since=90)).due(110)


def test_a_busy_engine_that_streams_is_never_probed():
    busy = _Handler(3, last_activity=999, last_progress=999, busy_since=0)  # busy for 1000 s, progress a moment ago
    assert not _canary(busy).due(1000)


def test_a_busy_engine_without_output_for_the_wait_time_is_probed_though_requests_keep_arriving():
    stalled = _Handler(2, last_activity=119, last_progress=100, busy_since=50)  # a request arrived at 119
    assert not _canary(stalled).due(109)
    assert _canary(stalled).due(110)
    assert not _canary(stalled, probed_at=105).due(110)  # probed 5 s ago: again at 115
    assert _canary(stalled, probed_at=105).due(115)
    # went busy at 130 after an idle spell: its first output may take up to the wait time
    fresh = _Handler(1, last_activity=130, last_progress=100, busy_since=130)
    assert not _canary(fresh).due(139) and _canary(fresh).due(140)


def test_an_engine_that_reports_no_steps_is_probed_idle_only():
    """Output alone cannot tell a long prefill from a hang (SGLang, TRT-LLM adapters): Dynamo's idle canary."""
    stalled = _Handler(2, last_activity=119, last_progress=100, busy_since=50)
    assert _canary(stalled).due(200) and not _canary(stalled, busy_probes=False).due(200)
    assert _canary(_Handler(0, last_activity=100, last_progress=95, busy_since=90), busy_probes=False).due(110)


def test_engine_steps_and_kv_events_are_progress_without_output():
    """The harness wraps the engine's forward-pass and KV-event sinks so each call moves the progress clock."""
    from dynamo.worker.requests import RequestHandler

    handler = RequestHandler(None)  # type: ignore[arg-type]
    handler.inflight, handler.busy_since, handler.last_progress = 1, 0.0, 0.0
    assert handler.stalled_for(1e9) > 1e8
    handler.progress()
    assert handler.stalled_for(handler.last_progress + 1) == pytest.approx(1)


class _FlakyStore:
    """A store whose next `fail` calls of `op` raise, as etcd does while unreachable."""

    def __init__(self, records: dict[str, bytes], op: str, fail: int) -> None:
        self.records, self.op, self.fail = dict(records), op, fail

    def _maybe_fail(self, op: str) -> None:
        if op == self.op and self.fail:
            self.fail -= 1
            raise ConnectionError("etcd unreachable")

    async def get(self, key):
        self._maybe_fail("get")
        return self.records.get(key)

    async def delete(self, key):
        self._maybe_fail("delete")
        self.records.pop(key, None)

    async def put(self, key, value):
        self._maybe_fail("put")
        self.records[key] = value


@pytest.mark.parametrize("op", ["get", "delete"])
async def test_a_leave_cut_short_by_a_store_error_is_finished_by_the_next_check(op):
    from dynamo.worker.canary import LEAVE_AFTER_FAILURES, DiscoveryMembership

    records = {"v1/instances/ns/backend/generate/1": b"instance", "v1/mdc/ns/backend/generate/1": b"card"}
    store = _FlakyStore(records, op, fail=1)
    canary = _canary(_Handler(0, 0, 0, 0))
    canary.membership = DiscoveryMembership(store, list(records))  # type: ignore[arg-type]
    for _ in range(LEAVE_AFTER_FAILURES):
        canary._record("no answer within 3 s")
    await canary._follow_health()
    assert store.records == records and not canary.membership.out, "the first try failed: still listed"
    await canary._follow_health()
    assert store.records == {} and canary.membership.out, "the next check took it out"
    canary._ready("canary health check passed")
    await canary._follow_health()
    assert store.records == records and not canary.membership.out


async def test_a_rejoin_cut_short_by_a_store_error_is_finished_by_the_next_check():
    from dynamo.worker.canary import LEAVE_AFTER_FAILURES, DiscoveryMembership

    records = {"v1/instances/ns/backend/generate/1": b"instance", "v1/mdc/ns/backend/generate/1": b"card"}
    store = _FlakyStore(records, "put", fail=1)
    canary = _canary(_Handler(0, 0, 0, 0))
    canary.membership = DiscoveryMembership(store, list(records))  # type: ignore[arg-type]
    for _ in range(LEAVE_AFTER_FAILURES):
        canary._record("no answer within 3 s")
    await canary._follow_health()
    canary._ready("canary health check passed")
    await canary._follow_health()
    assert store.records == {} and canary.membership.errors == 1
    await canary._follow_health()
    assert store.records == records and not canary.membership.out and not canary.membership.held


async def test_a_hung_endpoint_leaves_discovery_after_repeated_failures_and_rejoins_as_it_was():
    from dynamo.runtime.discovery.mem import MemStore
    from dynamo.worker.canary import LEAVE_AFTER_FAILURES, DiscoveryMembership

    store = MemStore(name="canary-membership")
    await store.start()
    try:
        records = {"v1/instances/ns/backend/generate/1": b"instance", "v1/mdc/ns/backend/generate/1": b"card"}
        for key, value in records.items():
            await store.put(key, value)
        canary = _canary(_Handler(0, 0, 0, 0))
        canary.membership = DiscoveryMembership(store, [*records, "v1/mdc/ns/backend/generate/absent"])
        for _ in range(LEAVE_AFTER_FAILURES - 1):
            canary._record("no answer within 3 s")
            await canary._follow_health()
        assert await store.get_prefix("v1/") == records, "one failure: /health 503, still listed"
        canary._record("no answer within 3 s")
        await canary._follow_health()
        await canary._follow_health()  # idempotent while out
        assert await store.get_prefix("v1/") == {}
        canary._ready("the engine streamed output")
        await canary._follow_health()
        assert await store.get_prefix("v1/") == records and not canary.membership.out
        assert not canary.membership.held
    finally:
        await store.close()
