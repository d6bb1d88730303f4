"""Busy thresholds end to end: when every worker is over `--active-decode-blocks-threshold`,
the frontend answers 503 with an OpenAI error at once instead of queueing, and serves
again once load drops."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.procs import Cluster, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("busy"), tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "1", "--num-gpu-blocks-override", "64", "--block-size", "16")
        c.frontend("--router-mode", "kv", "--active-decode-blocks-threshold", "0.1")
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def test_all_workers_busy_is_503_then_recovers(cluster):
    url = cluster.base_url + "/v1/completions"
    long_prompt = list(range(100, 100 + 16 * 8))  # 8 blocks = 12.5% of the cache, over the 10% threshold
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", url, json={"model": MODEL, "prompt": long_prompt, "max_tokens": 400,
                                            "stream": True}) as busy:
            assert busy.status_code == 200
            lines = busy.iter_lines()  # keep the iterator: dropping it closes the response
            next(lines)
            resp = http.post(url, json={"model": MODEL, "prompt": "one more", "max_tokens": 2})
            assert resp.status_code == 503, resp.text
            error = resp.json()["error"]
            assert error["code"] == "all_workers_busy" and error["type"] == "service_unavailable"
        # the long request was cancelled when its stream closed: the worker is free again
        wait_until(lambda: http.post(url, json={"model": MODEL, "prompt": "again", "max_tokens": 2}).status_code
                   == 200, 30, "the frontend to accept requests again")
