"""LoRA adapters loaded and unloaded while a frontend routes to them, with real processes: mockers with
`--enable-lora` behind a round-robin frontend, which learns of each load and unload from discovery a moment
after the worker's `/v1/loras` answered (the file backend's poll).
- After an unload, a request sent to that worker meanwhile is refused `lora_not_loaded` on the request plane
  and goes to another worker holding the adapter, or, with none left, is a 404 `model_not_found`: never a 400
  blaming the client.
- After a load's 200, a request for the adapter is served: it waits the moment the frontend needs to see it
  (admission.FIRST_WORKER_GRACE_SECS) instead of a 503 or 404."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dynamo.llm.tiny_lora import build_tiny_lora
from tests.fixtures.procs import Cluster, wait_until
from tests.router.e2e_helpers import MODEL, SMALL_KV, tokens, worker_requests

pytestmark = pytest.mark.e2e

LORA_FLAGS = ("--enable-lora", "--max-loras", "2", "--max-lora-rank", "8")
BURST = 8
# One client made ahead, so a burst reaches the frontend within milliseconds of the load or unload before it
# (a client per request spends longer building its TLS context than the frontend takes to see the change).
CLIENT = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=BURST))


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-churn")
    c = Cluster(tmp, tiny_model, "file", extra_env={"DYN_LORA_PATH": str(tmp / "lora-cache"), "HF_HUB_OFFLINE": "1"})
    c.adapter = build_tiny_lora(tiny_model, tmp / "tiny-lora")  # type: ignore[attr-defined]
    try:
        c.workers = [c.mocker(*SMALL_KV, *LORA_FLAGS) for _ in range(2)]  # type: ignore[attr-defined]
        c.frontend("--router-mode", "round-robin")
        c.wait_workers(MODEL, 2)
        yield c
    finally:
        c.stop()


def _loras_url(worker) -> str:
    return f"http://127.0.0.1:{worker.system_port}/v1/loras"


def _load(cluster, worker, name: str) -> None:
    resp = CLIENT.post(_loras_url(worker), json={"lora_name": name, "source": {"uri": cluster.adapter.as_uri()}},
                      timeout=30)
    assert resp.status_code == 200, resp.text


def _unload(worker, name: str) -> None:
    resp = CLIENT.delete(f"{_loras_url(worker)}/{name}")
    assert resp.status_code == 200, resp.text


def _one(base_url: str, model: str, i: int) -> httpx.Response:
    return CLIENT.post(base_url + "/v1/completions", json={"model": model, "prompt": tokens(500 + i, 8),
                                                           "max_tokens": 2})


def _burst(base_url: str, model: str) -> list[httpx.Response]:
    """BURST requests for `model` at once, right away."""
    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(lambda i: _one(base_url, model, i), range(BURST)))


def test_unloading_from_one_worker_leaves_the_other_serving_every_request(cluster):
    """Right after the unload the frontend still sends half of the requests to the worker that dropped the
    adapter (round-robin): each is refused there and served by the other holder."""
    a, b = cluster.workers
    for worker in (a, b):
        _load(cluster, worker, "shared")
    for round_ in range(3):
        cluster.wait_workers("shared", 2, timeout=30)
        served_before = worker_requests(b)
        _unload(a, "shared")
        answers = _burst(cluster.base_url, "shared")
        assert [r.status_code for r in answers] == [200] * BURST, [r.text for r in answers if r.status_code != 200]
        assert worker_requests(b) - served_before == BURST, f"round {round_}: every request served by b"
        _load(cluster, a, "shared")  # for the next round


def test_unloading_the_last_holder_is_a_404_never_a_400(cluster):
    a, _ = cluster.workers
    _load(cluster, a, "solo")
    cluster.wait_workers("solo", 1, timeout=30)
    assert _burst(cluster.base_url, "solo")[0].status_code == 200
    _unload(a, "solo")
    answers = _burst(cluster.base_url, "solo")
    assert {(r.status_code, r.json()["error"]["code"]) for r in answers} == {(404, "model_not_found")}, \
        [r.text for r in answers]
    wait_until(lambda: cluster.worker_count("solo") == 0, 30, "the adapter gone from the frontend")


@pytest.mark.parametrize("load_time", [None, "2"])
def test_an_adapter_is_served_right_after_its_load_returns(cluster, load_time):
    """A load that finishes between two looks of the frontend at discovery (no load time: the frontend never
    saw the card), or after it saw the card still loading (2 s, beyond the grace: requests then get 503): requests
    sent the moment the 200 returns."""
    worker = cluster.workers[0]
    if load_time is not None:
        worker = cluster.mocker(*SMALL_KV, *LORA_FLAGS, "--lora-load-time", load_time)
        cluster.wait_workers(MODEL, 3)
    name = f"fresh{load_time or 0}"
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(_load, cluster, worker, name)
        if load_time is not None:  # the frontend holds its loading card: requests now get 503
            wait_until(lambda: _one(cluster.base_url, name, 0).status_code == 503, 30, "503 while the adapter loads")
        loading.result()
    answers = _burst(cluster.base_url, name)
    assert [r.status_code for r in answers] == [200] * BURST, [r.text for r in answers if r.status_code != 200]
    _unload(worker, name)
