"""The mocker started as the profiler's DGD starts it, `--model-path Qwen/Qwen3-0.6B` and no --model-name:
the id is found in the local Hugging Face cache with no network and served under its name."""

from __future__ import annotations

import pytest

from tests.fixtures.procs import Cluster, free_port
from tests.mocker.hf_cache import lay_out_hf_cache

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_the_mocker_serves_a_hub_id_from_the_local_cache(tmp_path, tiny_model):
    hub = tmp_path / "hub"
    lay_out_hf_cache(hub, "Qwen/Qwen3-0.6B", tiny_model)
    cluster = Cluster(tmp_path, tiny_model, extra_env={"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    try:
        cluster.start("dynamo.mocker", ["--model-path", "Qwen/Qwen3-0.6B", "--speedup-ratio", "0"],
                      {"DYN_SYSTEM_PORT": str(free_port())})
        cluster.frontend()
        cluster.wait_workers("Qwen/Qwen3-0.6B", 1)
        reply = cluster.openai_client().chat.completions.create(
            model="Qwen/Qwen3-0.6B", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert reply.choices[0].finish_reason in ("length", "stop")
    finally:
        cluster.stop()
