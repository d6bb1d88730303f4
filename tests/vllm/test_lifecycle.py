"""`python -m dynamo.vllm` coming and going under a running frontend: health while the
engine loads, graceful SIGTERM with a request in flight, engine death, SIGKILL, restart."""

from __future__ import annotations

import os
import signal
import threading
import time

import openai
import pytest

from tests.fixtures.procs import metric_value, wait_until
from tests.vllm.conftest import (ENGINE_START_TIMEOUT, MODEL, VllmCluster, engine_processes, freeze_engine, health,
                                 metrics, step_frozen_engines, thaw_engine)

# Engine start-ups in the module fixture count against the first test: minutes on a busy 2-core box.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def cluster(vllm_python, vllm_model, tmp_path_factory):
    c = VllmCluster(tmp_path_factory.mktemp("vllm-lifecycle"), vllm_model, vllm_python)
    try:
        c.frontend()
        yield c
    finally:
        c.stop()


def client(cluster) -> openai.OpenAI:
    return openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=120)


def test_health_then_graceful_sigterm_finishes_the_request_in_flight(cluster):
    # A grace period longer than the request can take on a loaded box: the drain, not the abort, ends it.
    worker = cluster.vllm_worker(env={"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "180"}, wait=False)
    seen = set()
    wait_until(lambda: seen.add(health(worker)) or 200 in seen or not worker.alive(), ENGINE_START_TIMEOUT,
               "worker health 200",
               interval=0.2)
    assert 503 in seen and 200 in seen, seen  # 503 while the engine loads, then 200
    cluster.wait_workers(MODEL, 1)
    instances = cluster.tmp / "kv" / "v1" / "instances"
    keys = [p for p in instances.rglob("*") if p.is_file()]
    assert keys
    thread, result, frozen = stream_frozen_mid_request(cluster, worker)
    signalled = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    # Deregistered at once: well inside the 10 s lease TTL, and while the request still runs.
    wait_until(lambda: not any(k.exists() for k in keys), 5, "worker's instance keys withdrawn")
    # The frontend's watch follows (it raced the bare assert once); still inside the 10 s lease TTL.
    wait_until(lambda: MODEL not in cluster.models(), max(0.5, signalled + 8 - time.monotonic()),
               "the frontend to drop the model before the lease could expire")
    thaw_engine(frozen)  # the drain now has something to wait for: the engine finishes the request
    thread.join(240)
    assert result.get("finish") == ["length"], result  # the request in flight was finished, not cut
    assert sum(t > signalled for t in result["at"]) >= 1  # and it kept streaming after SIGTERM
    assert worker.popen.wait(60) == 0


def stream_frozen_mid_request(cluster, worker, attempts: int = 3) -> tuple[threading.Thread, dict, list[int]]:
    """A 1,500-token stream sent to a frozen vLLM engine: in flight for real (the handler holds
    it, vLLM's output processor tracks it) and unable to end, however fast the box (the tiny
    model runs it in a fifth of a second), until the caller thaws the returned pids. (Freezing
    after the first token raced: a fresh engine once sent all 1,500 tokens in one burst.) On a
    loaded 2-core box even a 1 ms slice of `stream_into_frozen` can run long enough for the whole
    stream; such a stream proves nothing either way, so another is sent, up to `attempts` in all."""
    for _ in range(attempts):
        thread, result, frozen = stream_into_frozen(cluster, worker)
        if "finish" not in result and held(worker) == 1:
            return thread, result, frozen
        thaw_engine(frozen)
        thread.join(60)
        assert result.get("finish") == ["length"], result  # an error is a failure, not a fast engine
    raise AssertionError(f"the engine finished each of {attempts} streams before it could be held mid-request")


def stream_into_frozen(cluster, worker) -> tuple[threading.Thread, dict, list[int]]:
    """One stream sent to the frozen engine, which is stepped until vLLM tracks the request."""
    result: dict = {"at": []}
    thread = threading.Thread(target=stream_into, args=(cluster, "A long story", result))
    frozen = freeze_engine(worker)  # the same pids stay frozen at return
    thread.start()
    wait_until(lambda: held(worker) == 1 or not thread.is_alive(), 60, "the request in the worker's handler")
    # The engine's side of admission needs the engine: step it until vLLM tracks the request.
    # 1 ms slices: admission needs little of the engine, and a fresh engine once sent a whole
    # 1,500-token stream in one burst inside a longer slice.
    step_frozen_engines([worker], lambda: tracked(worker) == 1 or not thread.is_alive(),
                        lambda: int(tracked(worker)) + len(result["at"]), max_slice=0.001)
    return thread, result, frozen


def held(worker) -> float:
    return metric_value(metrics(worker), "dynamo_vllm_handler_inflight_requests")


def tracked(worker) -> float:
    return metric_value(metrics(worker), "dynamo_vllm_unfinished_requests")


def stream_into(cluster, prompt: str, result: dict) -> None:
    parts = client(cluster).completions.create(model=MODEL, prompt=prompt, max_tokens=1500, stream=True,
                                               extra_body={"ignore_eos": True})
    chunks = []
    for chunk in parts:
        chunks.append(chunk)
        result["at"].append(time.monotonic())
    result["finish"] = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    result["text"] = "".join(c.choices[0].text for c in chunks if c.choices)


@pytest.fixture(autouse=True)
def no_worker_left(cluster):
    """Each test starts its own worker; whatever happens, none outlives the test."""
    yield
    for proc in [p for p in cluster.procs if p.name.startswith("vllm")]:
        proc.stop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # engine-core children too
        except ProcessLookupError:
            pass
        cluster.procs.remove(proc)
    wait_until(lambda: MODEL not in cluster.models(), 30, "no worker left at the frontend")


def relayed(worker) -> float | None:
    return metric_value(metrics(worker), "dynamo_vllm_kv_events_relayed")


PROMPT = [6 + i for i in range(70)]  # two full 32-token blocks: vLLM stores (and announces) them


def test_engine_death_leaves_discovery_and_exits_nonzero(cluster):
    # Prefix caching off: the worker says it will publish no KV events, and relays none.
    worker = cluster.vllm_worker("--no-enable-prefix-caching")
    cluster.wait_workers(MODEL, 1)
    assert "prefix caching is off: no KV events" in worker.log_path.read_text(errors="replace")
    assert client(cluster).completions.create(model=MODEL, prompt=PROMPT, max_tokens=2).usage.prompt_tokens == 70
    assert relayed(worker) == -1
    engine_cores = engine_processes(worker)
    assert engine_cores, "no engine-core child process"
    for pid in engine_cores:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not worker.alive(), 60, "worker to exit after its engine died")
    assert worker.popen.returncode not in (0, None)
    wait_until(lambda: MODEL not in cluster.models(), 15, "dead worker to leave discovery")


def test_restarted_worker_is_picked_up_and_killed_one_dropped(cluster):
    worker = cluster.vllm_worker()
    cluster.wait_workers(MODEL, 1)
    assert client(cluster).completions.create(model=MODEL, prompt=PROMPT, max_tokens=4,
                                              extra_body={"ignore_eos": True}).usage.completion_tokens == 4
    # Defaults: KV events on, relayed from vLLM's publisher; chat and completions served.
    wait_until(lambda: relayed(worker) >= 1, 30, "the default worker to relay its KV events")
    assert client(cluster).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=2).usage.completion_tokens >= 1
    os.killpg(worker.pid, signal.SIGKILL)  # the whole worker (engine core included) crashes
    wait_until(lambda: MODEL not in cluster.models(), 30, "killed worker to be dropped (lease expiry)")
    # Restarted: a new worker is picked up by the same frontend and serves; this one with
    # `--no-publish-kv-events` (no relay, -1) and `--endpoint-types completions` (chat refused).
    restarted = cluster.vllm_worker("--no-publish-kv-events", "--endpoint-types", "completions")
    cluster.wait_workers(MODEL, 1)
    assert client(cluster).completions.create(model=MODEL, prompt=PROMPT, max_tokens=4,
                                              extra_body={"ignore_eos": True}).usage.completion_tokens == 4
    assert relayed(restarted) == -1
    with pytest.raises(openai.BadRequestError) as refused:
        client(cluster).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=2)
    assert refused.value.body["code"] == "unsupported_model"
