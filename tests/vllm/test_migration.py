"""Token-exact migration with a real engine: 32 greedy streams over `dynamo.vllm`
workers (every eighth with n=2 and logprobs); one worker is SIGKILLed (or SIGTERMed
with a grace shorter than the streams) mid-run, its streams move to the others, and
every choice's text (and logprob tokens) equals what the uninterrupted run produced."""

from __future__ import annotations

import json
import os
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fixtures.procs import http_get, metric_value, wait_until
from tests.vllm.conftest import (MODEL, VllmCluster, freeze_engine, metrics, step_frozen_engines, thaw_engine,
                                 wait_healthy)

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1500)]

STREAMS = 32
# Long enough that no stream can end inside the slices that start them: progress counts chunks, and
# a chunk may carry several tokens, so with 48 tokens a CI run saw streams already finished at their
# workers (none in flight) while the client counted only 2-12 chunks of them.
MAX_TOKENS = 192
PROMPTS = [f"Request {i}: tell me about the number {i * 7} and" for i in range(STREAMS)]


@pytest.fixture(scope="module")
def cluster(vllm_python, vllm_model, tmp_path_factory):
    c = VllmCluster(tmp_path_factory.mktemp("vllm-migration"), vllm_model, vllm_python)
    try:
        c.frontend("--migration-limit", "3")
        # The grace is far shorter than a stream (192 tokens of 11 batched CPU streams take
        # seconds): a SIGTERMed worker cuts its streams at the deadline, however fast the box.
        # Each engine pins its OpenMP threads; spread them over the cores instead of all on core 0.
        cores = os.cpu_count() or 1
        c.workers = [c.vllm_worker(env={"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "0.2",
                                        "DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "0",
                                        "VLLM_CPU_OMP_THREADS_BIND": str(i % cores)}, wait=False) for i in range(3)]
        for w in c.workers:
            wait_healthy(w, timeout=900)
        c.wait_workers(MODEL, 3, timeout=120)
        c.reference = run_streams(c.base_url)
        yield c
    finally:
        c.stop()


def sampled_params(i: int) -> dict:
    """Every eighth stream asks for n=2 with logprobs: sampled (n > 1 needs temperature > 0) but
    with top_k=1, so each choice is still the greedy continuation and an exact oracle holds."""
    if i % 8 == 3:
        return {"n": 2, "temperature": 1.0, "top_k": 1, "logprobs": 1}
    return {"temperature": 0}


def one_stream(base_url: str, i: int, progress: list[int]) -> dict:
    """Per choice index: its text, its tokens' logprobs (when asked) as (token, logprob) pairs."""
    body = {"model": MODEL, "prompt": PROMPTS[i], "max_tokens": MAX_TOKENS, "stream": True, "ignore_eos": True,
            **sampled_params(i)}
    text: dict[int, list[str]] = {}
    logprobs: dict[int, list[tuple[str, float]]] = {}
    with httpx.Client(timeout=300) as client, client.stream("POST", base_url + "/v1/completions", json=body) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            assert "error" not in chunk, chunk
            for choice in chunk.get("choices", []):
                text.setdefault(choice["index"], []).append(choice["text"])
                if choice.get("logprobs"):
                    got = choice["logprobs"]
                    logprobs.setdefault(choice["index"], []).extend(zip(got["tokens"], got["token_logprobs"]))
                progress[i] += 1
    return {"text": {k: "".join(v) for k, v in text.items()}, "logprobs": logprobs}


def same_output(got: dict, want: dict) -> bool:
    """Texts equal; logprob tokens equal, values equal up to batch-order float noise."""
    if got["text"] != want["text"] or got["logprobs"].keys() != want["logprobs"].keys():
        return False
    for k, pairs in want["logprobs"].items():
        mine = got["logprobs"][k]
        if [t for t, _ in mine] != [t for t, _ in pairs]:
            return False
        if any(abs(a - b) > 0.05 for (_, a), (_, b) in zip(mine, pairs)):
            return False
    return True


def run_streams(base_url: str, during=None, streams: int = STREAMS) -> list[dict]:
    """`streams` concurrent streams (each `one_stream`); `during(progress)` runs while they do."""
    progress = [0] * streams
    with ThreadPoolExecutor(streams) as pool:
        futures = [pool.submit(one_stream, base_url, i, progress) for i in range(streams)]
        if during is not None:
            during(progress)
        return [f.result(timeout=600) for f in futures]


def inflight(worker) -> float:
    return metric_value(metrics(worker), "dynamo_component_inflight_requests") or 0.0


def migrations(cluster) -> float:
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"}) or 0.0


def signal_busiest(workers: list, progress: list[int], sig: int) -> object | None:
    """With every live engine frozen before the streams start, step them until the streams are
    under way, then send `sig` to the live worker holding the most of them.

    Nothing can end between the choice and the signal however fast the box (the tiny model runs
    all of them in a fraction of a second). The others thaw at once; the victim's engine stays
    frozen under SIGTERM (its streams must not end inside the drain grace; the worker kills its
    engine on exit) and thaws after SIGKILL (so the orphaned engine sees its parent gone and exits).

    Returns None, every engine thawed, when no worker holds a stream any more: on a loaded box
    one slice can overrun its sleep long enough for the tiny model to finish every stream (CI saw
    the client at ~100 chunks of 192 tokens, the rest already sent); the caller then runs again."""
    live = [w for w in workers if w.alive()]
    # Short slices: CI's box ran a whole slice of 50 ms into 39 tokens of every stream and the
    # streams ended before the choice (the tiny model decodes a batch in about a millisecond).
    step_frozen_engines(live, lambda: sum(1 for p in progress if p >= 2) >= len(progress) // 2,
                        lambda: sum(progress), max_slice=0.01)
    frozen = [freeze_engine(w) for w in live]
    busiest = max(range(len(live)), key=lambda i: inflight(live[i]))
    if inflight(live[busiest]) == 0:
        for pids in frozen:
            thaw_engine(pids)
        return None
    try:
        live[busiest].popen.send_signal(sig)
    finally:
        for i, pids in enumerate(frozen):
            if i != busiest or sig != signal.SIGTERM:
                thaw_engine(pids)
    return live[busiest]


def interrupted_run(base_url: str, workers: list, sig: int, streams: int = STREAMS,
                    attempts: int = 3) -> tuple[list[dict], object]:
    """`run_streams` with `sig` sent to the busiest of `workers` mid-run (`signal_busiest`): every
    live engine is frozen first so the streams start against frozen engines. Runs again, up to
    `attempts` times, when the streams had all ended at the workers before one could be chosen.
    Returns the streams' outputs and the signalled worker."""
    victim: dict = {}

    def during(progress: list[int]) -> None:
        victim["worker"] = signal_busiest(workers, progress, sig)
    for _ in range(attempts):
        for w in workers:
            if w.alive():
                freeze_engine(w)
        outputs = run_streams(base_url, during, streams)
        if victim["worker"] is not None:
            return outputs, victim["worker"]
    pytest.fail(f"every stream had ended at its worker before one could be interrupted, {attempts} times")


def test_reference_run_is_complete(cluster):
    assert len(cluster.reference) == STREAMS
    texts = [ref["text"][0] for ref in cluster.reference]
    assert all(texts) and len(set(texts)) > 1  # distinct prompts, distinct continuations
    for i, ref in enumerate(cluster.reference):
        if sampled_params(i).get("n") == 2:
            assert ref["text"][0] == ref["text"][1]  # top_k=1: both choices greedy
            assert all(len(ref["logprobs"][k]) == MAX_TOKENS for k in (0, 1)), ref["logprobs"]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_streams_of_a_stopped_worker_migrate_token_exact(cluster, sig):
    before = migrations(cluster)
    texts, worker = interrupted_run(cluster.base_url, cluster.workers, sig)
    moved = migrations(cluster) - before
    mismatched = [i for i in range(STREAMS) if not same_output(texts[i], cluster.reference[i])]
    assert mismatched == [], [(texts[i], cluster.reference[i]) for i in mismatched[:3]]
    assert moved >= 1, "no stream was migrated"
    worker.popen.wait(120)
    if sig == signal.SIGTERM:
        assert worker.popen.returncode == 0, worker.log()
    wait_until(lambda: cluster.worker_count(MODEL) == sum(w.alive() for w in cluster.workers), 60,
               "the stopped worker left discovery")


