"""The global router in `disagg` mode (its default), end to end: two prefill pools and a decode pool, each a
mocker behind its own `python -m dynamo.router` in its own namespace; the global router registers as the
frontend's one prefill worker and one decode worker, so the frontend disaggregates through it: the prefill
goes to the pool the prompt's length calls for, the decode (with the prefill's transfer parameters) to the
decode pool."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value
from tests.router.e2e_helpers import BLOCK, SMALL_KV, tokens, worker_requests

pytestmark = pytest.mark.e2e

MODEL = "tiny"
FRONT_NS = "gp-ctrl"
PREFILL = ["gp-prefill-0", "gp-prefill-1"]
DECODE = ["gp-decode-0"]
PLAN = {  # the shape of Dynamo's global-planner-mocker-test.yaml ConfigMap: prompts under 100 tokens to pool 0
    "num_prefill_pools": 2, "num_decode_pools": 1,
    "prefill_pool_dynamo_namespaces": PREFILL, "decode_pool_dynamo_namespaces": DECODE,
    "prefill_pool_selection_strategy": {"ttft_min_ms": 10, "ttft_max_ms": 3000, "ttft_resolution": 1,
                                        "isl_min": 0, "isl_max": 200, "isl_resolution": 2,
                                        "prefill_pool_mapping": [[0], [1]]},
    "decode_pool_selection_strategy": {"itl_min_ms": 10, "itl_max_ms": 500, "itl_resolution": 1,
                                       "context_length_min": 0, "context_length_max": 32000,
                                       "context_length_resolution": 1, "decode_pool_mapping": [[0]]},
}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("global-router-disagg"), tiny_model, "file")
    try:
        c.prefill, c.decode = [], []  # type: ignore[attr-defined]
        for ns, role, component, into in [*((ns, "prefill", "prefill", c.prefill) for ns in PREFILL),
                                          *((ns, "decode", "backend", c.decode) for ns in DECODE)]:
            into.append(c.mocker("--endpoint", f"dyn://{ns}.{component}.generate", "--disaggregation-mode", role,
                                 *SMALL_KV))
            c.start("dynamo.router", ["--endpoint", f"{ns}.{component}.generate", "--router-block-size", str(BLOCK)],
                    name=f"router-{ns}")
        plan = c.tmp / "global_router_config.json"
        plan.write_text(json.dumps(PLAN))
        c.gr_port = free_port()  # type: ignore[attr-defined]
        c.start("dynamo.global_router", ["--config", str(plan), "--model-name", MODEL, "--model-path",
                                         str(tiny_model)],
                env={"DYN_SYSTEM_PORT": str(c.gr_port), "DYN_NAMESPACE": FRONT_NS}, name="global-router")
        c.frontend("--namespace", FRONT_NS, "--router-mode", "round-robin", "--enforce-disagg")
        c.wait_workers(MODEL, 2, timeout=120)  # the global router's prefill and decode faces
        yield c
    finally:
        c.stop()


def served(procs) -> list[float]:
    return [worker_requests(p) for p in procs]


def frontend_metric(cluster, name: str) -> float:
    return metric_value(http_get(cluster.base_url + "/metrics")[1].decode(), name, {"model": MODEL}) or 0.0


@pytest.mark.parametrize("length, pool", [(40, 0), (150, 1)])
def test_prefill_goes_to_the_pool_of_its_length_and_decode_to_the_decode_pool(cluster, length, pool):
    prefills, decodes = served(cluster.prefill), served(cluster.decode)
    remote = frontend_metric(cluster, "dynamo_frontend_remote_prefills_total")
    resp = httpx.post(cluster.base_url + "/v1/completions", timeout=60,
                      json={"model": MODEL, "prompt": tokens(length, length), "max_tokens": 5, "ignore_eos": True})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"]["completion_tokens"] == 5
    after = served(cluster.prefill)
    assert after[pool] == prefills[pool] + 1 and after[1 - pool] == prefills[1 - pool], (prefills, after)
    assert served(cluster.decode) == [decodes[0] + 1]
    assert frontend_metric(cluster, "dynamo_frontend_remote_prefills_total") == remote + 1


def test_a_chat_stream_through_both_faces(cluster):
    client = cluster.openai_client()
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}],
                                            max_tokens=6, stream=True, extra_body={"nvext": {"router": {
                                                "ttft_target": 50, "itl_target": 20}}})
    chunks = [c for c in stream if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"
