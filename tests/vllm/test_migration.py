"""Token-exact migration with a real engine: 32 greedy streams over `dynamo.vllm`
workers; one worker is SIGKILLed (or SIGTERMed with a grace shorter than the streams)
mid-run, its streams move to the others, and every stream's text equals what the
uninterrupted run produced."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures.procs import http_get, metric_value, wait_until
from tests.vllm.conftest import MODEL, VllmCluster, metrics, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1500)]

STREAMS = 32
MAX_TOKENS = 48
PROMPTS = [f"Request {i}: tell me about the number {i * 7} and" for i in range(STREAMS)]


@pytest.fixture(scope="module")
def cluster(vllm_python, vllm_model, tmp_path_factory):
    c = VllmCluster(tmp_path_factory.mktemp("vllm-migration"), vllm_model, vllm_python)
    try:
        c.frontend("--migration-limit", "3")
        # The grace is far shorter than a stream (48 tokens of 11 batched CPU streams take
        # seconds): a SIGTERMed worker cuts its streams at the deadline, however fast the box.
        # Each engine pins its OpenMP threads; spread them over the cores instead of all on core 0.
        cores = os.cpu_count() or 1
        c.workers = [c.vllm_worker(env={"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "0.2",
                                        "VLLM_CPU_OMP_THREADS_BIND": str(i % cores)}, wait=False) for i in range(3)]
        for w in c.workers:
            wait_healthy(w, timeout=900)
        c.wait_workers(MODEL, 3, timeout=120)
        c.reference = run_streams(c.base_url)
        yield c
    finally:
        c.stop()


def one_stream(base_url: str, i: int, progress: list[int]) -> str:
    body = {"model": MODEL, "prompt": PROMPTS[i], "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
            "ignore_eos": True}
    text = []
    with httpx.Client(timeout=300) as client, client.stream("POST", base_url + "/v1/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk.get("choices", []):
                text.append(choice["text"])
                progress[i] += 1
    return "".join(text)


def run_streams(base_url: str, during=None) -> list[str]:
    progress = [0] * STREAMS
    with ThreadPoolExecutor(STREAMS) as pool:
        futures = [pool.submit(one_stream, base_url, i, progress) for i in range(STREAMS)]
        if during is not None:
            during(progress)
        return [f.result(timeout=600) for f in futures]


def inflight(worker) -> float:
    return metric_value(metrics(worker), "dynamo_component_inflight_requests") or 0.0


def migrations(cluster) -> float:
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"}) or 0.0


def interrupt(cluster, sig: int):
    """When streams are under way, signal a live worker holding some of them."""
    victim: dict = {}

    def during(progress: list[int]) -> None:
        wait_until(lambda: sum(1 for p in progress if p >= 2) >= STREAMS // 2, 300, "streams under way")
        live = [w for w in cluster.workers if w.alive()]
        worker = max(live, key=inflight)
        assert inflight(worker) > 0
        victim["worker"] = worker
        worker.popen.send_signal(sig)
    return during, victim


def test_reference_run_is_complete(cluster):
    assert len(cluster.reference) == STREAMS and all(cluster.reference)
    assert len(set(cluster.reference)) > 1  # distinct prompts, distinct continuations


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_streams_of_a_stopped_worker_migrate_token_exact(cluster, sig):
    before = migrations(cluster)
    during, victim = interrupt(cluster, sig)
    texts = run_streams(cluster.base_url, during)
    moved = migrations(cluster) - before
    mismatched = [i for i in range(STREAMS) if texts[i] != cluster.reference[i]]
    assert mismatched == [], [(texts[i], cluster.reference[i]) for i in mismatched[:3]]
    assert moved >= 1, "no stream was migrated"
    worker = victim["worker"]
    worker.popen.wait(120)
    if sig == signal.SIGTERM:
        assert worker.popen.returncode == 0, worker.log()
    wait_until(lambda: cluster.worker_count(MODEL) == sum(w.alive() for w in cluster.workers), 60,
               "the stopped worker left discovery")


