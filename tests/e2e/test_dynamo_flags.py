"""A frontend and a mocker started with the flags of a manifest written for NVIDIA Dynamo's image,
on real processes: flags we implement take effect (`--namespace-prefix` serves only matching
namespaces), flags without effect here are logged as such, and both serve; a mocker asked for
several workers in one process refuses to start."""

from __future__ import annotations

import json
import subprocess
import sys

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e


def test_a_dynamo_manifests_frontend_flags_start_a_serving_frontend(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        worker = c.mocker("--namespace", "team-a-prod", "--router-mode", "kv", "--kv-cache-dtype", "fp8",
                          "--num-workers", "1", "--max-model-len", "1024", model_name="a-model")
        c.mocker("--namespace", "team-b", model_name="b-model")
        fe = c.frontend("--namespace-prefix", "team-a", "--router-mode", "power-of-two", "--trust-remote-code",
                        "--router-event-threads", "4", "--dyn-chat-processor", "dynamo")
        wait_until(lambda: c.models() == ["a-model"], 60, "the team-a model listed")
        client = c.openai_client()
        assert client.completions.create(model="a-model", prompt="hi", max_tokens=2).usage.completion_tokens == 2
        with pytest.raises(openai.NotFoundError):  # another team's namespace: not served here
            client.completions.create(model="b-model", prompt="hi", max_tokens=2)
        log = fe.log()
        for flag in ("--trust-remote-code", "--router-event-threads", "--dyn-chat-processor"):
            assert f"{flag} is accepted for compatibility with NVIDIA Dynamo and has no effect" in log, log
        assert c.models() == ["a-model"]
        for flag in ("--router-mode", "--kv-cache-dtype"):  # the worker's own, in its log
            assert f"{flag} is accepted for compatibility with NVIDIA Dynamo and has no effect" in worker.log()
        c.frontend()  # without the prefix: both teams' models, so team-b's worker was there all along
        wait_until(lambda: sorted(c.models()) == ["a-model", "b-model"], 60, "both models listed")
    finally:
        c.stop()


def test_a_mocker_asked_for_several_workers_refuses_to_start(tiny_model):
    result = subprocess.run([sys.executable, "-m", "dynamo.mocker", "--model-path", str(tiny_model),
                             "--num-workers", "4"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "one worker per process" in result.stderr


def test_dynamos_load_aware_preset_serves_kv_routing_without_cache_credit(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.mocker()
        fe = c.frontend("--load-aware", "--router-decode-active-request-weight", "2")
        c.wait_workers("tiny", 1)
        client = c.openai_client()
        assert client.completions.create(model="tiny", prompt="hi", max_tokens=2).usage.completion_tokens == 2
        router = json.loads(http_get(c.base_url + "/health")[1])["router"]
        assert router["router_mode"] == "kv" and router["models"]["tiny"]["mode"] == "load-only"
        assert "has no effect" not in fe.log()
    finally:
        c.stop()
