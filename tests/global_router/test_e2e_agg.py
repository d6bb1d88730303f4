"""The global router in `agg` mode, end to end, as Dynamo's bare-process example runs it
(examples/global_planner/local): two aggregated mocker pools, each behind its own `python -m dynamo.router`
in its own namespace, a global router in front of them, and a frontend that sees only the global router's
namespace. Requests land in the pool their `nvext.router.ttft_target` (or priority) calls for; a pool whose
router is gone hands its requests to a faster pool (`enable_priority_retry`)."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import BLOCK, SMALL_KV, worker_requests

pytestmark = pytest.mark.e2e

MODEL = "tiny"  # the pools serve the same name: only the frontend's --namespace keeps them apart
FRONT_NS = "grdemo"
POOLS = ["agg_pool_0", "agg_pool_1"]
PLAN = {
    "mode": "agg", "enable_priority_retry": True, "num_agg_pools": 2, "agg_pool_dynamo_namespaces": POOLS,
    "agg_pool_selection_strategy": {
        "ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 2,
        "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1,
        "agg_pool_mapping": [[0], [1]],
        "priority_overrides": [{"min_priority": 10, "max_priority": 100, "target_pool": 0}]},
}


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("global-router-agg"), tiny_model, "file")
    try:
        c.pool_workers, c.pool_routers = [], []  # type: ignore[attr-defined]
        for ns in POOLS:
            c.pool_workers.append(c.mocker("--endpoint", f"dyn://{ns}.backend.generate", *SMALL_KV))
            c.pool_routers.append(c.start("dynamo.router", ["--endpoint", f"{ns}.backend.generate",
                                                            "--router-block-size", str(BLOCK)], name=f"router-{ns}"))
        plan = c.tmp / "agg_config.json"
        plan.write_text(json.dumps(PLAN))
        c.gr_port = free_port()  # type: ignore[attr-defined]
        c.gr = c.start("dynamo.global_router", ["--config", str(plan), "--model-name", MODEL,  # type: ignore
                                                "--model-path", str(tiny_model), "--namespace", FRONT_NS],
                       env={"DYN_SYSTEM_PORT": str(c.gr_port)}, name="global-router")
        c.frontend("--namespace", FRONT_NS)
        c.wait_workers(MODEL, 1, timeout=120)
        yield c
    finally:
        c.stop()


def chat(cluster, nvext: dict | None = None, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "One fact about the moon."}], "max_tokens": 8,
            **extra}
    if nvext is not None:
        body["nvext"] = nvext
    return httpx.post(cluster.base_url + "/v1/chat/completions", json=body, timeout=60)


def served(cluster) -> list[float]:
    return [worker_requests(w) for w in cluster.pool_workers]


def routed(cluster, ns: str) -> float:
    text = http_get(f"http://127.0.0.1:{cluster.gr_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_global_router_requests_total", {"type": "agg", "pool_namespace": ns}) or 0.0


def test_the_frontend_sees_one_worker_the_global_router(cluster):
    models = httpx.get(cluster.base_url + "/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in models] == [MODEL]
    assert cluster.worker_count(MODEL) == 1  # the pools' own workers are in other namespaces


@pytest.mark.parametrize("ttft, pool", [(100, 0), (900, 1)])
def test_the_ttft_target_picks_the_pool(cluster, ttft, pool):
    before, via = served(cluster), routed(cluster, POOLS[pool])
    resp = chat(cluster, {"router": {"ttft_target": ttft}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]
    after = served(cluster)
    assert after[pool] == before[pool] + 1 and after[1 - pool] == before[1 - pool], (before, after)
    assert routed(cluster, POOLS[pool]) == via + 1


def test_no_target_is_the_middle_of_the_range_and_streams(cluster):
    before = served(cluster)
    client = cluster.openai_client()
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=6, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text
    after = served(cluster)
    assert after[1] == before[1] + 1  # 500 ms, the middle of 0..1000, is the upper band
    assert after[0] == before[0]


def test_a_priority_override_wins_over_the_grid(cluster):
    before = served(cluster)
    resp = chat(cluster, {"router": {"ttft_target": 900}, "agent_hints": {"priority": 50}})
    assert resp.status_code == 200, resp.text
    after = served(cluster)
    assert after[0] == before[0] + 1 and after[1] == before[1]


@pytest.mark.parametrize("nvext, param", [
    ({"router": {"ttft_targte": 100}}, "nvext.router.ttft_targte"),
    ({"router": {"ttft_target": -5}}, "nvext.router.ttft_target"),
    ({"router": {"itl_target": "fast"}}, "nvext.router.itl_target"),
    ({"router": [100]}, "nvext.router"),
])
def test_malformed_targets_are_the_clients_error(cluster, nvext, param):
    resp = chat(cluster, nvext)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param


def test_a_pin_to_the_global_router_itself_is_served(cluster):
    """The frontend sees the global router as its one worker, so a pin it (or a client) sets names the global
    router's face; the pool's router, which knows only its own workers, refused that id with a 400."""
    face = json.loads(http_get(cluster.base_url + "/health")[1])["instances"][0]["instance_id"]
    resp = chat(cluster, {"backend_instance_id": face, "router": {"ttft_target": 100}})
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]


def test_a_pool_without_its_router_hands_requests_to_a_faster_pool(cluster):
    """Last in this module: it stops pool 1's router."""
    cluster.pool_routers[1].stop()
    text = lambda: http_get(f"http://127.0.0.1:{cluster.gr_port}/metrics")[1].decode()  # noqa: E731
    before = served(cluster)
    retried = metric_value(text(), "dynamo_global_router_retries_total", {"type": "agg", "pool_namespace": POOLS[1]})
    resp = chat(cluster, {"router": {"ttft_target": 900}})
    assert resp.status_code == 200, resp.text
    after = served(cluster)
    assert after[0] == before[0] + 1 and after[1] == before[1]
    assert metric_value(text(), "dynamo_global_router_retries_total",
                        {"type": "agg", "pool_namespace": POOLS[1]}) == (retried or 0) + 1
    wait_until(lambda: cluster.gr.alive(), 1, "global router alive")


def test_a_pool_that_never_comes_is_named_and_its_requests_get_503(cluster, tiny_model):
    """A plan naming a pool nobody serves: the model is registered after --pool-ready-timeout-secs, the log
    names the pool, its requests are refused as "no workers" (503, retry later), the other pool's served;
    then the other pool's router dies without leaving discovery (last in the module): 503 as well."""
    plan = json.loads(json.dumps(PLAN))
    plan["enable_priority_retry"] = False
    plan["agg_pool_dynamo_namespaces"] = [POOLS[0], "nowhere"]
    path = cluster.tmp / "missing_pool.json"
    path.write_text(json.dumps(plan))
    gr = cluster.start("dynamo.global_router", ["--config", str(path), "--model-name", MODEL, "--model-path",
                                                str(tiny_model), "--namespace", "grdemo2",
                                                "--pool-ready-timeout-secs", "1"], name="global-router-2")
    other = Cluster(cluster.tmp / "fe2", tiny_model, "file")
    other.env = cluster.env  # the same discovery store
    other.tmp.mkdir(exist_ok=True)
    try:
        other.frontend("--namespace", "grdemo2")
        other.wait_workers(MODEL, 1, timeout=60)
        assert "nowhere" in gr.log() and "after 1 s" in gr.log()
        assert chat(other, {"router": {"ttft_target": 100}}).status_code == 200
        resp = chat(other, {"router": {"ttft_target": 900}})
        assert resp.status_code == 503, resp.text
        assert "nowhere" in resp.json()["error"]["message"]
        # A pool router that died without leaving discovery: unreachable is "no workers" too, not a 500.
        cluster.pool_routers[0].kill()
        resp = chat(other, {"router": {"ttft_target": 100}})
        assert resp.status_code == 503, resp.text
        assert other.openai_client() is not None and gr.alive()
    finally:
        other.stop()

