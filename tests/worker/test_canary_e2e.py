"""Canary health checks (Dynamo's DYN_HEALTH_CHECK_ENABLED): a real mocker worker idle for DYN_CANARY_WAIT_TIME
sends its engine a one-token request; answered in time, /health stays 200 and the canaries are counted; an
engine too slow to answer within DYN_HEALTH_CHECK_REQUEST_TIMEOUT (a mocker slowed 10,000 times: a hung engine
to the canary) turns /health 503 and says why in the log. Without the setting no canary is sent.

With requests in flight, progress is what counts: each engine step (the mocker reports one forward pass per step,
as vLLM's stat logger does), KV event or output. An engine whose step does not return (a mocker whose profiled
prefill of a long prompt is ONE step of STALL_S, while its one-token canary takes 5 ms: the stand-in for a hung
EngineCore) is probed once it has made no progress for the wait time, turns /health 503, leaves discovery after a
second failure (the frontend stops listing it), and is ready and listed again once the step ends; a busy engine
streaming long answers is never probed; nor is one running a long chunked prefill (many short steps, no output
for several wait times), which stays ready and listed."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

CANARY = {"DYN_HEALTH_CHECK_ENABLED": "true", "DYN_CANARY_WAIT_TIME": "1", "DYN_HEALTH_CHECK_REQUEST_TIMEOUT": "1"}
QUICK_STOP = {"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "0", "DYN_RUNTIME_GRACEFUL_SHUTDOWN_TIMEOUT_SECS": "1"}
BUSY_CANARY = {**CANARY, "DYN_HEALTH_CHECK_REQUEST_TIMEOUT": "3"}  # a busy engine's canary queues behind its batch
STALL_S = 15.0  # the stalled engine's one prefill step; /health must be 503 inside it and 200 after it
PREFILL_STEP_S = 0.25  # each step of the long chunked prefill: well inside the canary's 1 s wait
PREFILL_CHUNK = 32  # --max-num-batched-tokens: a prompt of ~800 tokens takes ~25 steps, ~6 s without output


def health(worker) -> int:
    return http_get(f"http://127.0.0.1:{worker.system_port}/health")[0]


def canaries(worker, result: str) -> float:
    text = http_get(f"http://127.0.0.1:{worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_canary_health_checks_total", {"result": result}) or 0.0


def test_canaries_keep_a_healthy_worker_ready_and_take_a_hung_one_out(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        healthy = c.mocker("--speedup-ratio", "100", env=CANARY)
        hung = c.mocker("--speedup-ratio", "0.0001", env=CANARY)
        plain = c.mocker("--speedup-ratio", "100")
        for worker in (healthy, hung, plain):
            wait_until(lambda w=worker: "initialized" in w.log(), 120, "the worker to serve")
        wait_until(lambda: canaries(healthy, "ok") >= 3, 60, "three canaries answered")
        assert health(healthy) == 200 and canaries(healthy, "failed") == 0
        wait_until(lambda: health(hung) == 503, 60, "the hung worker's /health to turn 503")
        body = json.loads(http_get(f"http://127.0.0.1:{hung.system_port}/health")[1])
        assert "notready" in body["endpoints"].values(), body
        assert canaries(hung, "failed") >= 1
        assert "canary health check of dyn://dynamo.backend.generate failed (no answer within 1 s)" in hung.log()
        assert health(plain) == 200 and canaries(plain, "ok") == 0  # off unless enabled, as in Dynamo
    finally:
        c.stop()


def prefill_profile(tmp_path, name: str, isl: list[int], ttft_ms: list[float]) -> str:
    """A --planner-profile-data file: a prefill step of n new tokens takes ttft_ms interpolated at n."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"prefill_isl": isl, "prefill_ttft": ttft_ms,
                                "prefill_thpt_per_gpu": [i / (t / 1e3) for i, t in zip(isl, ttft_ms)]}))
    return str(path)


def stalling_profile(tmp_path) -> str:
    """Prefill 5 ms up to 50 tokens (the canary), STALL_S from 200 tokens on (a long prompt: one step that
    does not return for STALL_S; to the canary, an engine hung mid-step)."""
    return prefill_profile(tmp_path, "stall", [1, 50, 200, 100000], [5.0, 5.0, STALL_S * 1e3, STALL_S * 1e3])


def stream_in_background(c: Cluster, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed completion in a thread; the dict fills with when its chunks came and any error."""
    seen: dict = {"chunks": [], "error": None}

    def run() -> None:
        try:
            for _ in c.openai_client(timeout=90).completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                                                    stream=True, extra_body={"ignore_eos": True}):
                seen["chunks"].append(time.monotonic())
        except Exception as exc:  # reported by the test's assertions
            seen["error"] = exc

    seen["thread"] = threading.Thread(target=run, daemon=True)
    seen["thread"].start()
    return seen


def test_a_stalled_engine_with_requests_in_flight_turns_unhealthy_and_a_streaming_one_never(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        stalled = c.mocker("--planner-profile-data", stalling_profile(tmp_path), model_name="stalled",
                           env={**CANARY, **QUICK_STOP})
        busy = c.mocker("--speedup-ratio", "0.3", model_name="busy", env={**BUSY_CANARY, **QUICK_STOP})  # ~20 ms/token
        c.frontend()
        c.wait_workers("stalled", 1)
        c.wait_workers("busy", 1)
        wait_until(lambda: canaries(stalled, "ok") >= 1 and canaries(busy, "ok") >= 1, 60, "idle canaries answered")
        assert health(stalled) == 200

        long_answer = stream_in_background(c, "busy", "hi", 1900)  # ~40 s of tokens: it outlives the stall
        wait_until(lambda: long_answer["chunks"], 30, "the busy worker to stream")
        busy_answers: list[int] = []

        def busy_asked() -> bool:  # the busy worker's /health, asked at each check of the stalled one
            busy_answers.append(health(busy))
            return True

        stuck = stream_in_background(c, "stalled", "hello " * 300, 4)
        began = time.monotonic()
        wait_until(lambda: busy_asked() and health(stalled) == 503, STALL_S - 3,
                   "the stalled worker's /health to turn 503")
        assert not stuck["chunks"] and time.monotonic() - began < STALL_S, "503 came from the stall"
        assert "no engine progress for" in stalled.log() and canaries(stalled, "failed") >= 1

        wait_until(lambda: busy_asked() and c.worker_count("stalled") == 0, STALL_S,
                   "the hung worker to leave discovery")
        assert time.monotonic() - began < STALL_S, "it left while the engine was stalled"
        assert c.worker_count("busy") == 1
        # The busy worker has streamed for seconds now: an idle canary sent as its answer began has ended.
        busy_probes = canaries(busy, "ok") + canaries(busy, "failed")

        # Back once the step ends: the engine steps (or, had the frontend cut the silent stream, a canary passes).
        wait_until(lambda: busy_asked() and health(stalled) == 200 and c.worker_count("stalled") == 1, STALL_S + 30,
                   "the stalled worker ready and listed again")
        assert "back in discovery" in stalled.log()
        stuck["thread"].join(30)

        # All along the busy worker streamed, and /health said 200 each time it was asked.
        assert long_answer["thread"].is_alive(), "the long answer outlived the stall"
        while long_answer["thread"].is_alive() and time.monotonic() - began < STALL_S + 20:
            busy_asked()
            time.sleep(0.2)
        # Read while its answer still streams (no idle canary can be due then): a streaming engine is not probed.
        probed = canaries(busy, "ok") + canaries(busy, "failed")
        assert long_answer["thread"].is_alive(), "the long answer still streaming"
        assert probed == busy_probes, "a busy engine that makes progress is never probed"
        assert len(busy_answers) > 50 and set(busy_answers) == {200}, busy_answers
        times = [t for t in long_answer["chunks"] if t >= began]
        assert times[-1] - times[0] > STALL_S, "the busy worker streamed through the whole test"
    finally:
        c.stop()


def test_a_long_chunked_prefill_that_streams_nothing_keeps_its_worker_ready_and_listed(tiny_model, tmp_path):
    """A healthy engine prefilling a long prompt in many short steps streams nothing for several canary wait
    times: its steps are progress, so it is not probed, /health stays 200 and it stays in discovery."""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        step_ms = PREFILL_STEP_S * 1e3
        profile = prefill_profile(tmp_path, "chunked", [1, 100000], [step_ms, step_ms])  # every step PREFILL_STEP_S
        worker = c.mocker("--planner-profile-data", profile, "--max-num-batched-tokens", str(PREFILL_CHUNK),
                          model_name="prefill", env={**CANARY, **QUICK_STOP})
        c.frontend()
        c.wait_workers("prefill", 1)
        wait_until(lambda: canaries(worker, "ok") >= 1, 60, "an idle canary answered")
        probes = canaries(worker, "ok") + canaries(worker, "failed")

        answer = stream_in_background(c, "prefill", "hello " * 270, 2)  # ~810 tokens
        began, answers, listed = time.monotonic(), [], []
        while not answer["chunks"] and answer["thread"].is_alive() and time.monotonic() - began < 60:
            answers.append(health(worker))
            listed.append(c.worker_count("prefill"))
            time.sleep(0.2)
        silent = (answer["chunks"][0] if answer["chunks"] else time.monotonic()) - began
        assert answer["error"] is None and answer["chunks"], answer
        assert silent > 4 * float(CANARY["DYN_CANARY_WAIT_TIME"]), f"the prefill streamed nothing for {silent:.1f}s"
        assert set(answers) == {200} and set(listed) == {1}, (answers, listed)
        assert canaries(worker, "ok") + canaries(worker, "failed") == probes, "not probed while it prefilled"
        assert "no engine progress" not in worker.log() and "withdrawn" not in worker.log()
        answer["thread"].join(30)
    finally:
        c.stop()
