"""LoRA adapters end to end with real processes: two mockers with `--enable-lora`, a KV-mode
and a round-robin frontend on one discovery store. Adapters are loaded through the workers'
system port (`/v1/loras`), listed in `/v1/models`, routed only to the workers holding them,
and their KV blocks never count as cache hits for the base model or another adapter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dynamo.llm.tiny_lora import build_tiny_lora
from tests.fixtures.procs import Cluster, free_port, http_get, wait_until
from tests.router.e2e_helpers import (BLOCK, MODEL, SMALL_KV, cached_tokens, complete, route_info, tokens,
                                      worker_requests)

pytestmark = pytest.mark.e2e

LORA_FLAGS = ("--enable-lora", "--max-loras", "2", "--max-lora-rank", "8")


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    c = Cluster(tmp, tiny_model, "file", extra_env={"DYN_LORA_PATH": str(tmp / "lora-cache"),
                                                    "HF_HUB_OFFLINE": "1"})
    c.adapter = build_tiny_lora(tiny_model, tmp / "tiny-lora")  # type: ignore[attr-defined]
    try:
        c.workers = [c.mocker(*SMALL_KV, *LORA_FLAGS) for _ in range(2)]  # type: ignore[attr-defined]
        c.frontend("--router-mode", "kv")
        rr_port = free_port()
        c.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(rr_port),
                                    "--router-mode", "round-robin"], name="frontend-rr")
        c.rr_url = f"http://127.0.0.1:{rr_port}"  # type: ignore[attr-defined]
        c.wait_workers(MODEL, 2)
        wait_until(lambda: MODEL in _models(c.rr_url), 60, "round-robin frontend lists the model")
        yield c
    finally:
        c.stop()


def _loras_url(worker) -> str:
    return f"http://127.0.0.1:{worker.system_port}/v1/loras"


def _load(worker, name: str, uri: str) -> httpx.Response:
    return httpx.post(_loras_url(worker), json={"lora_name": name, "source": {"uri": uri}}, timeout=30)


def _models(base_url: str) -> dict[str, dict]:
    status, body = http_get(base_url + "/v1/models")
    return {m["id"]: m for m in httpx.Response(status, content=body).json()["data"]} if status == 200 else {}


def _post(base_url: str, model: str, prompt: list[int]) -> httpx.Response:
    return httpx.post(base_url + "/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 2},
                      timeout=60)


def test_load_is_validated_idempotent_and_listed(cluster):
    a, b = cluster.workers
    uri = cluster.adapter.as_uri()
    first = _load(a, "ada", uri)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "success" and body["lora_name"] == "ada" and body["lora_id"] > 0
    again = _load(a, "ada", uri)
    assert again.status_code == 200 and again.json()["lora_id"] == body["lora_id"]
    assert _load(a, "ada", uri + "/other").status_code == 409
    assert httpx.get(_loras_url(a)).json() == {"status": "success", "loras": {"ada": body["lora_id"]}, "count": 1}
    assert httpx.get(_loras_url(b)).json()["count"] == 0
    wait_until(lambda: "ada" in _models(cluster.base_url), 30, "adapter listed")
    assert _models(cluster.base_url)["ada"]["parent"] == MODEL


@pytest.mark.parametrize("payload,status", [
    ({"lora_name": "x"}, 400),
    ({"lora_name": "", "source": {"uri": "file:///tmp"}}, 400),
    ({"lora_name": "x", "source": {"uri": "ftp://host/x"}}, 400),
    ({"lora_name": "x", "source": {"uri": "file:///nonexistent/adapter"}}, 404),
    ({"lora_name": "x", "source": {"uri": "hf://no-such-org/no-such-adapter"}}, 502),
    ({"lora_name": "x", "source": {"uri": "s3://bucket/adapter"}}, 502),
])
def test_bad_loads_fail_clearly_and_leave_nothing(cluster, payload, status):
    worker = cluster.workers[1]
    resp = httpx.post(_loras_url(worker), json=payload, timeout=30)
    assert resp.status_code == status, resp.text
    assert resp.json()["status"] == "error" and resp.json()["message"]
    assert httpx.get(_loras_url(worker)).json()["count"] == 0
    assert "x" not in _models(cluster.base_url)


def test_a_body_nested_too_deeply_is_a_400(cluster):
    resp = httpx.post(_loras_url(cluster.workers[1]), content=b"[" * 30000, timeout=30)
    assert resp.status_code == 400 and resp.json()["status"] == "error"


def test_adapter_requests_land_only_on_its_worker_in_both_router_modes(cluster):
    a, b = cluster.workers
    assert _load(a, "ada", cluster.adapter.as_uri()).status_code == 200
    wait_until(lambda: "ada" in _models(cluster.rr_url), 30, "adapter listed on the round-robin frontend")
    for url in (cluster.base_url, cluster.rr_url):
        before = [worker_requests(w) for w in (a, b)]
        for i in range(6):
            complete(url, tokens(300 + i, 3 * BLOCK), model="ada")
        after = [worker_requests(w) for w in (a, b)]
        assert [x - y for x, y in zip(after, before)] == [6.0, 0.0], url


def test_kv_cache_hits_never_cross_adapters(cluster):
    a, _ = cluster.workers
    assert _load(a, "ada", cluster.adapter.as_uri()).status_code == 200
    assert _load(a, "ada2", cluster.adapter.as_uri()).status_code == 200
    wait_until(lambda: "ada2" in _models(cluster.base_url), 30, "second adapter listed")
    shared = tokens(7, 6 * BLOCK)
    # Base model first (it may land on either worker; worker A holds both adapters).
    complete(cluster.base_url, shared + [5], model=MODEL)
    complete(cluster.base_url, shared + [5], model=MODEL)
    assert cached_tokens(complete(cluster.base_url, shared + [6], model="ada")) == 0
    assert cached_tokens(complete(cluster.base_url, shared + [7], model="ada2")) == 0
    # Within one adapter the prefix is reused.
    assert cached_tokens(complete(cluster.base_url, shared + [8], model="ada")) >= 6 * BLOCK
    assert cached_tokens(complete(cluster.base_url, shared + [9], model="ada2")) >= 6 * BLOCK


def test_base_model_keeps_its_kv_index_on_a_worker_that_also_serves_adapters(cluster):
    """The worker is in the base model's pool and in each adapter's: its KV events feed every
    pool's router, not only the last one to track it."""
    a, _ = cluster.workers
    assert _load(a, "ada", cluster.adapter.as_uri()).status_code == 200
    wait_until(lambda: route_info(cluster.base_url, "ada").get("workers"), 30, "the adapter's pool routed")
    (a_id,) = route_info(cluster.base_url, "ada")["workers"]
    indexed = lambda: route_info(cluster.base_url)["indexed_blocks"].get(f"{a_id}:0", 0)  # noqa: E731
    before = indexed()
    prefix = tokens(31, 6 * BLOCK)
    resp = httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": prefix + [1], "max_tokens": 2, "nvext": {"backend_instance_id": a_id}})
    assert resp.status_code == 200, resp.text
    wait_until(lambda: indexed() != before, 20, "the base model's router to index the adapter worker's new blocks")
    for i in range(3):  # unpinned: the base router finds the prefix on the worker that holds it
        assert cached_tokens(complete(cluster.base_url, prefix + [10 + i])) >= 6 * BLOCK


def test_unload_makes_the_adapter_404_and_unlisted(cluster):
    a, _ = cluster.workers
    assert _load(a, "gone", cluster.adapter.as_uri()).status_code == 200
    wait_until(lambda: "gone" in _models(cluster.base_url), 30, "adapter listed")
    assert _post(cluster.base_url, "gone", tokens(1, 8)).status_code == 200
    resp = httpx.delete(_loras_url(a) + "/gone", timeout=30)
    assert resp.status_code == 200 and resp.json()["lora_name"] == "gone"
    assert httpx.delete(_loras_url(a) + "/gone", timeout=30).status_code == 404
    wait_until(lambda: "gone" not in _models(cluster.base_url), 30, "adapter unlisted")
    resp = _post(cluster.base_url, "gone", tokens(1, 8))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    assert MODEL in _models(cluster.base_url)


def test_503_while_loading_then_served_and_worker_exit_removes_it(cluster, tiny_model):
    extra = cluster.mocker(*SMALL_KV, *LORA_FLAGS, "--lora-load-time", "4")
    cluster.wait_workers(MODEL, 3)
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(_load, extra, "solo", cluster.adapter.as_uri())
        wait_until(lambda: _post(cluster.base_url, "solo", tokens(2, 8)).status_code == 503, 30,
                   "503 while the adapter loads")
        assert "solo" not in _models(cluster.base_url)
        assert loading.result().status_code == 200
    wait_until(lambda: "solo" in _models(cluster.base_url), 30, "adapter listed")
    assert _post(cluster.base_url, "solo", tokens(2, 8)).status_code == 200
    assert extra.stop() == 0
    wait_until(lambda: "solo" not in _models(cluster.base_url), 30, "adapter unlisted after its worker left")
    assert _post(cluster.base_url, "solo", tokens(2, 8)).status_code in (404, 503)
