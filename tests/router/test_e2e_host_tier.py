"""Offloaded KV tiers end to end: mockers with a host tier (`--num-host-blocks`, vLLM's CPU offload)
publish its events, the frontend's router indexes them apart from the device tier and credits them
(`--router-host-cache-hit-weight`), and the mocker serves a prompt it holds only in host memory as
cached. Real frontend and mocker processes."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.procs import Cluster, wait_until
from tests.router.e2e_helpers import BLOCK, MODEL, cached_tokens, route_info, tokens

pytestmark = pytest.mark.e2e

DEVICE_BLOCKS = 64
PROMPT_BLOCKS = 40


def complete_on(base_url: str, prompt: list[int], worker: int | None = None) -> dict:
    nvext = {"extra_fields": ["worker_id"], **({"backend_instance_id": worker} if worker is not None else {})}
    resp = httpx.post(base_url + "/v1/completions", timeout=60,
                      json={"model": MODEL, "prompt": prompt, "max_tokens": 2, "nvext": nvext})
    assert resp.status_code == 200, resp.text
    return resp.json()


def served_by(body: dict) -> int:
    return body["nvext"]["worker_id"]["decode_worker_id"]


@pytest.mark.parametrize("host_weight, expect_host", [("0.75", True), ("0", False)])
def test_a_prompt_held_only_in_host_memory_is_routed_back_to_it(tiny_model, tmp_path, host_weight, expect_host):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        for _ in range(2):
            c.mocker("--num-gpu-blocks-override", str(DEVICE_BLOCKS), "--block-size", str(BLOCK),
                     "--speedup-ratio", "10", "--num-host-blocks", "1024")
        c.frontend("--router-mode", "kv", "--router-host-cache-hit-weight", host_weight)
        c.wait_workers(MODEL, 2)
        a, b = route_info(c.base_url)["workers"][:2]
        prompt = tokens(1, PROMPT_BLOCKS * BLOCK)
        assert served_by(complete_on(c.base_url, prompt + [7], a)) == a
        for seed in (2, 3):  # other prompts push it out of a's device cache; its host tier keeps it
            complete_on(c.base_url, tokens(seed, PROMPT_BLOCKS * BLOCK), a)
        complete_on(c.base_url, prompt[:4 * BLOCK] + tokens(9, 8 * BLOCK), b)  # b caches its first 4 blocks
        wait_until(lambda: route_info(c.base_url)["indexed_blocks"].get(f"{b}:0", 0) >= 4, 20, "b's blocks indexed")
        body = complete_on(c.base_url, prompt + [8])
        if expect_host:  # a's 40 host blocks count as 30 against b's 4 on its device
            assert served_by(body) == a
            assert cached_tokens(body) >= PROMPT_BLOCKS * BLOCK  # copied back from host memory, not recomputed
        else:  # no credit for host memory: b's device hit wins
            assert served_by(body) == b
    finally:
        c.stop()
