"""Offloaded KV tiers end to end: mockers with a host tier (`--num-host-blocks`, vLLM's CPU offload)
publish its events, the frontend's router indexes them apart from the device tier and credits them
(`--router-host-cache-hit-weight`), and the mocker serves a prompt it holds only in host memory as
cached. Real frontend and mocker processes."""

from __future__ import annotations

import threading

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


def test_a_prompt_whose_holder_must_wait_for_kv_blocks_goes_where_it_fits(tiny_model, tmp_path):
    """The holder of a long prompt is busy with long answers that leave no room for it: an engine admits
    a request only when its blocks fit, so it would wait there until one of them ends (seconds). With
    both workers keeping their evictions in host memory, the router sends it to the other worker, to be
    prefilled at once. (Pricing usage alone, the 1,800-token cache hit would keep it on the holder.)"""
    c = Cluster(tmp_path, tiny_model, "file")
    fillers: list[threading.Thread] = []
    stop = threading.Event()
    try:
        for _ in range(2):
            c.mocker("--num-gpu-blocks-override", "180", "--block-size", str(BLOCK), "--speedup-ratio", "2",
                     "--num-host-blocks", "1024")
        c.frontend("--router-mode", "kv")
        c.wait_workers(MODEL, 2)
        a, b = route_info(c.base_url)["workers"][:2]
        prompt = tokens(1, 112 * BLOCK)  # 1,792 tokens: 112 of a's 180 blocks
        assert served_by(complete_on(c.base_url, prompt + [7], a)) == a
        assert served_by(complete_on(c.base_url, tokens(2, 4 * BLOCK), b)) == b  # b has host-tier blocks too
        wait_until(lambda: route_info(c.base_url)["indexed_blocks"].get(f"{a}:0", 0) >= 112, 20, "a's blocks")
        started = [threading.Event() for _ in range(3)]
        for i, first_token in enumerate(started):  # 3 long answers on a: 48 prompt blocks, growing
            fillers.append(threading.Thread(target=stream_until, daemon=True, args=(
                c.base_url, tokens(10 + i, 16 * BLOCK), a, first_token, stop)))
            fillers[-1].start()
        for first_token in started:
            assert first_token.wait(60), "a long answer on a did not start"
        body = complete_on(c.base_url, prompt + [8])
        assert served_by(body) == b
    finally:
        stop.set()
        for thread in fillers:
            thread.join(30)
        c.stop()


def stream_until(base_url: str, prompt: list[int], worker: int, first_token: threading.Event,
                 stop: threading.Event) -> None:
    """A 300-token streamed answer pinned to `worker`, abandoned once `stop` is set."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 300, "stream": True, "ignore_eos": True,
            "nvext": {"backend_instance_id": worker}}
    with httpx.stream("POST", base_url + "/v1/completions", json=body, timeout=60) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                first_token.set()
            if stop.is_set():
                return
