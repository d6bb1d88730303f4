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
