"""Frontend + `python -m dynamo.vllm` (vLLM's CPU build, a tiny random-weight Llama):
token-exact against vLLM's own offline output, streaming, concurrency, cancellation,
stop strings, usage, prefix reuse and KV events. One engine for the whole module."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from dynamo.llm.protocol import PreprocessedRequest, SamplingOptions, StopConditions
from dynamo.llm.protocol import request_encoder
from dynamo.llm.tokenizer import Tokenizer
from dynamo.llm.kv_events.hashing import block_hashes
from dynamo.router.indexer import KvIndexer
from dynamo.llm.kv_events.protocol import decode_router_events
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.event_plane.base import create_subscriber
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from tests.fixtures.procs import http_get, metric_value, wait_until
from tests.vllm.conftest import (BLOCK_SIZE, MAX_MODEL_LEN, MODEL, VllmCluster, direct_generate, engine_processes,
                                 freeze_engine, ids, metrics, offline_reference, reference_result,
                                 thaw_engine, wait_healthy)

# Engine start-ups in the module fixture count against the first test: minutes on a busy 2-core box.
pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1200)]

MAX_TOKENS = 24
REQUEST_LIMIT = 10
# The longest request the context allows; a fast box still runs it in well under a second.
LONG = MAX_MODEL_LEN - 40


EXACT_PROMPTS = [ids(20, 1), ids(75, 2)]


@pytest.fixture(scope="module")
def env(vllm_python, vllm_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm-serving")
    cluster = VllmCluster(tmp, vllm_model, vllm_python)
    try:
        worker = cluster.vllm_worker("--engine-request-limit", str(REQUEST_LIMIT), wait=False)
        reference = offline_reference(vllm_python, vllm_model, EXACT_PROMPTS, MAX_TOKENS, tmp / "reference.log")
        cluster.frontend()
        wait_healthy(worker)
        cluster.wait_workers(MODEL, 1)
        yield {"cluster": cluster, "worker": worker, "reference": reference_result(reference),
               "tokenizer": Tokenizer.from_dir(vllm_model)}
    finally:
        cluster.stop()


@pytest.fixture()
def client(env):
    return openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x", max_retries=0, timeout=120)


def instance(env) -> dict:
    data = json.loads(http_get(env["cluster"].base_url + "/health")[1])
    return next(i for i in data["instances"] if i["model"] == MODEL)


def test_token_exact_against_vllm_offline(env, client):
    address = instance(env)["transport"]["tcp"]
    for prompt, expected in zip(EXACT_PROMPTS, env["reference"]):
        request = PreprocessedRequest(request_id=f"exact-{len(prompt)}", model=MODEL, token_ids=prompt,
                                      stop_conditions=StopConditions(max_tokens=MAX_TOKENS),
                                      sampling_options=SamplingOptions(temperature=0.0), eos_token_ids=[5, 2])
        outputs = asyncio.run(direct_generate(address, request))
        assert [t for out in outputs for t in out.token_ids] == expected
        assert outputs[0].cached_tokens == 0  # a prompt this module never sent before
        finish = "length" if len(expected) == MAX_TOKENS else "eos"  # the reference says which
        assert outputs[-1].finish_reason == finish
        # Through the frontend (token-id prompt): same tokens, so the same text and count.
        resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].text == env["tokenizer"].decode(expected)
        assert resp.usage.completion_tokens == len(expected)
        assert resp.usage.prompt_tokens == len(prompt)


def test_greed_sampling_is_greedy_whatever_the_sampling_fields(env, client):
    """nvext.greed_sampling (Dynamo's): a hot temperature and a wide top_p still give vLLM's greedy
    answer, the offline reference's."""
    prompt, expected = EXACT_PROMPTS[0], env["reference"][0]
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=2.0, top_p=1.0,
                                     seed=123, extra_body={"nvext": {"greed_sampling": True}})
    assert resp.choices[0].text == env["tokenizer"].decode(expected)
    hot = [client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=2.0,
                                     seed=s).choices[0].text for s in (1, 2)]
    assert env["tokenizer"].decode(expected) not in hot  # without it the same fields sample


def test_an_integer_in_stop_is_a_stop_token_id_that_vllm_stops_on(env, client):
    """Dynamo's spelling of a stop token: an integer in `stop`. vLLM stops there, hides the token, and
    says which stop matched (`nvext.extra_fields: ["stop_reason"]`)."""
    prompt, expected = EXACT_PROMPTS[0], env["reference"][0]
    k = next(i for i in range(2, len(expected)) if expected[i] not in expected[:i])
    resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0,
                                     stop=[expected[k], "a stop string that never comes"],
                                     extra_body={"nvext": {"extra_fields": ["stop_reason"]}})
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].text == env["tokenizer"].decode(expected[:k])
    assert resp.usage.completion_tokens == k + 1  # the stop token was generated, and hidden
    assert resp.model_extra["nvext"]["stop_reason"] == expected[k]
    free = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0,
                                     extra_body={"nvext": {"extra_fields": ["stop_reason"]}})
    assert free.choices[0].finish_reason == "length" and free.model_extra["nvext"]["stop_reason"] is None


def test_streaming_and_non_streaming_agree_with_usage(client):
    messages = [{"role": "user", "content": "Tell me a story about a robot"}]
    stream = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    unary = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert text == unary.choices[0].message.content
    assert len(chunks) >= 3  # role, content (tokens may merge into one chunk when the client lags), usage
    assert unary.usage.prompt_tokens == usage.prompt_tokens > 5
    assert unary.usage.completion_tokens == usage.completion_tokens
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + unary.usage.completion_tokens
    assert unary.choices[0].finish_reason == "length" and unary.usage.completion_tokens == 20
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_eight_concurrent_streams(env):
    async def one(client, i):
        stream = await client.completions.create(model=MODEL, prompt=ids(30, 10 + i % 2), max_tokens=32,
                                                 temperature=0, stream=True, extra_body={"ignore_eos": True})
        return "".join([c.choices[0].text async for c in stream if c.choices])

    async def run():
        async with openai.AsyncOpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x", max_retries=0,
                                      timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(8)))

    texts = asyncio.run(run())
    assert all(texts)
    assert len(set(texts[0::2])) == 1 and len(set(texts[1::2])) == 1  # greedy: same prompt, same text


def test_stop_string_ends_the_completion(client):
    prompt = ids(25, 3)
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0).choices[0].text
    stop = full[len(full) // 2:len(full) // 2 + 3]
    assert stop.strip(), f"greedy text too short to cut: {full!r}"
    cut = client.completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == full[:full.index(stop)]


def test_top_k_and_top_p_reach_vllm(env, client):
    """At temperature 1 with a seed, vLLM's sampled text differs from the greedy reference;
    `top_k: 1` or a tiny `top_p` leave only the most likely token, so the text is greedy again.
    Dropped anywhere between the client and vLLM, these would sample like the control."""
    prompt, expected = EXACT_PROMPTS[0], env["reference"][0]
    greedy = env["tokenizer"].decode(expected)

    def sampled(**extra) -> str:
        return client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=1.0,
                                         seed=11, extra_body=extra).choices[0].text

    assert sampled() != greedy  # the control: this seed really samples
    assert sampled(top_k=1) == greedy
    assert client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=1.0,
                                     seed=11, top_p=1e-6).choices[0].text == greedy


def test_min_tokens_reaches_vllm(env):
    """A hidden stop token the greedy output reaches at position k ends the answer there;
    with `min_tokens` k+6 vLLM may not produce it before that many tokens."""
    address = instance(env)["transport"]["tcp"]
    prompt, expected = EXACT_PROMPTS[0], env["reference"][0]
    k = next(i for i in range(3, len(expected) - 6) if expected[i] not in expected[:i])
    stop = expected[k]

    def run(min_tokens: int | None) -> list[int]:
        request = PreprocessedRequest(
            request_id=f"min-tokens-{min_tokens}", model=MODEL, token_ids=prompt, eos_token_ids=[],
            stop_conditions=StopConditions(max_tokens=MAX_TOKENS, min_tokens=min_tokens, stop_token_ids_hidden=[stop]),
            sampling_options=SamplingOptions(temperature=0.0))
        return [t for out in asyncio.run(direct_generate(address, request)) for t in out.token_ids]

    plain = run(None)
    assert plain[:k] == expected[:k] and len(plain) <= k + 1 and stop not in plain[:k]
    held = run(k + 6)
    assert held[:k] == expected[:k]
    assert len(held) >= k + 6 and stop not in held[:k + 6]


def test_unset_max_tokens_runs_to_the_context_end(env):
    """Worker default (Dynamo's): no `max_tokens` -> max_model_len - prompt length."""
    address = instance(env)["transport"]["tcp"]
    prompt = ids(MAX_MODEL_LEN - 6, 8)
    request = PreprocessedRequest(request_id="no-max-tokens", model=MODEL, token_ids=prompt, eos_token_ids=[5, 2],
                                  stop_conditions=StopConditions(ignore_eos=True),
                                  sampling_options=SamplingOptions(temperature=0.0))
    outputs = asyncio.run(direct_generate(address, request))
    assert sum(len(out.token_ids) for out in outputs) == 6
    assert outputs[-1].finish_reason == "length"


def long_request(request_id: str, salt: int) -> PreprocessedRequest:
    return PreprocessedRequest(request_id=request_id, model=MODEL, token_ids=ids(10, salt),
                               stop_conditions=StopConditions(max_tokens=LONG, ignore_eos=True))


def poll_until(read, want, timeout: float) -> list:
    """Values of read() until it returns `want` (last) or the timeout passes."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(read())
        if seen[-1] == want:
            break
        time.sleep(0.02)
    return seen


def cancelled(worker) -> float:
    return metric_value(metrics(worker), "dynamo_component_cancellation_total") or 0


def unfinished(worker) -> float:
    return metric_value(metrics(worker), "dynamo_vllm_unfinished_requests")


def check_dropped_while_frozen(worker, before: float) -> None:
    """The cancel reached vLLM while its engine was frozen, so the request cannot have
    finished by itself: vLLM's output processor dropped it (`abort`), the handler counted a
    cancel, nothing is left in flight."""
    wait_until(lambda: unfinished(worker) == 0, 30, "vLLM to drop the cancelled request")
    wait_until(lambda: metric_value(metrics(worker), "dynamo_component_inflight_requests") == 0, 15,
               "worker in-flight back to 0")
    assert metric_value(metrics(worker), "dynamo_vllm_handler_inflight_requests") == 0
    assert cancelled(worker) == before + 1


def admitted_while_frozen(worker, client: asyncio.Future) -> None:
    """A request was sent to `worker` with its engine frozen: wait, the engine still frozen,
    until vLLM tracks it. Admission runs in the worker's own process (vLLM's output processor
    counts the request before it is handed to the engine core), so the request is in flight for
    real and can neither advance nor finish. Never thawing the engine meanwhile matters: a thawed
    slice that a loaded box overruns ran the whole 2,008-token request (CI saw it)."""
    wait_until(lambda: unfinished(worker) == 1 or client.done(), 60, "vLLM to track the request")
    assert unfinished(worker) == 1, client.done() and (client.exception() or client.result())


def test_cancelled_request_is_aborted_in_vllm(env):
    """Request-plane cancel (what the frontend sends when its client goes away) -> engine abort.
    Abort, not natural completion: the engine is frozen while the cancel goes in."""
    worker, address = env["worker"], instance(env)["transport"]["tcp"]

    async def cancel_in_flight() -> None:
        client = RequestPlaneClient()
        freeze_engine(worker)
        try:
            stream = await client.open_stream(address, "generate", request_encoder.encode(long_request("c", 4)))
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.to_thread(admitted_while_frozen, worker, first)
            before = cancelled(worker)
            stream.cancel()
            await asyncio.to_thread(check_dropped_while_frozen, worker, before)
            first.cancel()
        finally:
            thaw_engine(engine_processes(worker))
            await client.close()

    asyncio.run(cancel_in_flight())
    after = PreprocessedRequest(request_id="after-cancel", model=MODEL, token_ids=ids(10, 7),
                                stop_conditions=StopConditions(max_tokens=4, ignore_eos=True))
    assert sum(len(o.token_ids) for o in asyncio.run(direct_generate(address, after))) == 4  # serves on


def test_client_disconnect_through_the_frontend_frees_the_engine(env):
    """The HTTP client goes away while its stream is in flight: the worker's handler sees a
    cancel (not a request that finished: the engine is frozen meanwhile) and vLLM drops it."""
    worker = env["worker"]
    body = {"model": MODEL, "prompt": ids(10, 8), "max_tokens": LONG, "ignore_eos": True, "stream": True}

    async def disconnect_in_flight() -> None:
        async with httpx.AsyncClient(base_url=env["cluster"].base_url, timeout=300) as http:
            async def read_stream() -> str:
                """What the frontend sent, should it end the stream (it must not: the engine is frozen)."""
                async with http.stream("POST", "/v1/completions", json=body) as resp:
                    lines = [line async for line in resp.aiter_lines()]
                    return f"HTTP {resp.status_code}: {lines[:3]}"

            freeze_engine(worker)
            reader = asyncio.ensure_future(read_stream())
            try:
                await asyncio.to_thread(admitted_while_frozen, worker, reader)
                before = cancelled(worker)
                reader.cancel()  # the client goes away: its connection closes
                await asyncio.gather(reader, return_exceptions=True)
                await asyncio.to_thread(check_dropped_while_frozen, worker, before)
            finally:
                reader.cancel()
                thaw_engine(engine_processes(worker))

    asyncio.run(disconnect_in_flight())


def test_requests_beyond_engine_request_limit_are_overloaded(env):
    """With REQUEST_LIMIT long requests held in the handler, one more is refused as
    overloaded: through the frontend an HTTP 529, on the request plane an `overloaded`
    error. The long requests go to a frozen engine (the handler holds them all the same), so
    none can finish under the probes however fast the box (a fast CI box ran all ten between
    two looks)."""
    worker, address = env["worker"], instance(env)["transport"]["tcp"]

    def held() -> float:
        return metric_value(metrics(worker), "dynamo_vllm_handler_inflight_requests")

    async def probe_frontend() -> httpx.Response:
        async with httpx.AsyncClient(base_url=env["cluster"].base_url, timeout=60) as http:
            return await http.post("/v1/completions", json={"model": MODEL, "prompt": ids(10, 6), "max_tokens": 2})

    async def probe_direct(client: RequestPlaneClient) -> StreamError | None:
        extra = await client.open_stream(address, "generate", request_encoder.encode(long_request("x", 5)))
        try:
            await extra.__anext__()
            return None
        except StreamError as exc:
            return exc
        finally:
            extra.cancel()

    async def run():
        client = RequestPlaneClient()
        freeze_engine(worker)  # nothing held can advance or finish while the probes run
        streams = []
        try:
            for i in range(REQUEST_LIMIT):
                streams.append(await client.open_stream(
                    address, "generate", request_encoder.encode(long_request(f"l{i}", 5))))
            await asyncio.to_thread(wait_until, lambda: held() == REQUEST_LIMIT, 60, "the long requests held")
            return {"http": await probe_frontend(), "direct": await probe_direct(client)}
        finally:
            for stream in streams:
                stream.cancel()
            thaw_engine(engine_processes(worker))
            await client.close()

    results = asyncio.run(run())
    assert results["http"].status_code == 529, results["http"].text
    assert results["http"].json()["error"]["code"] == "overloaded", results["http"].text
    error = results["direct"]
    assert error is not None, "a request beyond the limit was started"
    assert error.code == "overloaded", error
    assert "Server overloaded" in str(error)
    wait_until(lambda: held() == 0, 15, "cancelled long requests to leave the handler")


def test_repeated_long_prompt_reports_cached_tokens(client):
    prompt = ids(300, 6)
    first = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, temperature=0)
    second = client.completions.create(model=MODEL, prompt=prompt, max_tokens=2, temperature=0)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 288 and cached % BLOCK_SIZE == 0, cached  # every full block but the last token's


def test_model_card_comes_from_the_engine(env):
    text = http_get(env["cluster"].base_url + "/metrics")[1].decode()
    labels = {"model": MODEL}
    assert metric_value(text, "dynamo_frontend_model_kv_cache_block_size", labels) == BLOCK_SIZE
    assert metric_value(text, "dynamo_frontend_model_context_length", labels) == MAX_MODEL_LEN
    assert metric_value(text, "dynamo_frontend_model_total_kv_blocks", labels) > 1000  # 1 GiB of CPU KV cache
    worker_metrics = metrics(env["worker"])
    assert metric_value(worker_metrics, "dynamo_component_total_blocks", KV_GAUGE_LABELS) == \
        metric_value(text, "dynamo_frontend_model_total_kv_blocks", labels)


# NVIDIA Dynamo's KV-cache gauges (`LLMBackendMetrics`) and the labels its worker adds to vLLM's series.
KV_GAUGE_LABELS = {"model": MODEL, "dynamo_component": "backend", "dp_rank": "0"}


def test_worker_metrics_serve_vllms_series_and_dynamos_kv_gauges(env, client):
    """What Dynamo's autoscaling guide and dashboards query on a vLLM worker's system port."""
    labels = {"dynamo_namespace": "dynamo", "dynamo_component": "backend", "dynamo_endpoint": "generate",
              "worker_id": f"{instance(env)['instance_id']:x}", "model": MODEL}
    before = metrics(env["worker"])
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert metric_value(before, name, labels) is not None, name
    assert metric_value(before, "dynamo_component_gpu_cache_usage_percent", KV_GAUGE_LABELS) is not None
    assert metric_value(before, "dynamo_component_kv_cache_hit_rate", KV_GAUGE_LABELS) is not None
    assert metric_value(before, "dynamo_component_model_load_time_seconds",
                        {"model": MODEL, "dynamo_component": "backend"}) > 0
    assert "python_gc_objects" not in before  # only the engine's own families are re-served
    done = metric_value(before, "vllm:request_success_total", labels) or 0
    client.completions.create(model=MODEL, prompt=ids(10, 9), max_tokens=2, temperature=0)
    wait_until(lambda: (metric_value(metrics(env["worker"]), "vllm:request_success_total", labels) or 0) > done,
               30, "vLLM's own request counter to count the request")


def test_kv_events_reach_a_router_indexer(env, monkeypatch):
    """vLLM's BlockStored events, relayed by the worker, rebuild its blocks in our indexer."""
    monkeypatch.setenv("DYN_FILE_KV", env["cluster"].env["DYN_FILE_KV"])
    worker_id = instance(env)["instance_id"]
    prompt = ids(4 * BLOCK_SIZE + 5, 7)
    relayed_before = metric_value(metrics(env["worker"]), "dynamo_vllm_kv_events_relayed")
    assert relayed_before is not None and relayed_before >= 0  # -1 would mean no relay at all
    received = []

    async def run() -> int:
        store = make_store("file")
        await store.start()
        sub = await create_subscriber(None, store, "dynamo", "backend", "kv-events")
        indexer = KvIndexer()
        try:
            deadline = time.monotonic() + 30  # connected to the worker's publisher (no fixed sleep)
            while worker_id not in sub.publishers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert worker_id in sub.publishers, sub.publishers
            await asyncio.to_thread(openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x")
                                    .completions.create, model=MODEL, prompt=prompt, max_tokens=2)
            want = block_hashes(prompt, BLOCK_SIZE)
            deadline = time.monotonic() + 15
            it = sub.__aiter__()
            while time.monotonic() < deadline:
                try:
                    _, payload = await asyncio.wait_for(it.__anext__(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                events = decode_router_events(payload)
                for event in events:
                    indexer.apply_event(event)
                received.extend(events)
                score = indexer.find_matches(want).scores.get((worker_id, 0), 0)
                if score == len(want):
                    return score
            return indexer.find_matches(want).scores.get((worker_id, 0), 0)
        finally:
            await sub.close()
            await store.close()

    assert asyncio.run(run()) == 4
    # Every event that reached the event plane was counted as relayed from vLLM's publisher.
    relayed = metric_value(metrics(env["worker"]), "dynamo_vllm_kv_events_relayed")
    assert relayed - relayed_before >= len(received) >= 1


def test_forward_pass_metrics_from_vllm(env, monkeypatch):
    """The worker publishes Dynamo's ForwardPassMetrics from vLLM's stat logger: decode steps
    with their KV tokens while a request runs, then the idle heartbeat."""
    from dynamo.llm.forward_pass import FPM_TOPIC, fpm_decoder

    monkeypatch.setenv("DYN_FILE_KV", env["cluster"].env["DYN_FILE_KV"])
    worker_hex = f"{instance(env)['instance_id']:x}"

    async def run() -> list:
        store = make_store("file")
        await store.start()
        sub = await create_subscriber(None, store, "dynamo", "backend", FPM_TOPIC)
        got = []
        try:
            deadline = time.monotonic() + 30  # connected to the worker's publisher (no fixed sleep)
            while instance(env)["instance_id"] not in sub.publishers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert instance(env)["instance_id"] in sub.publishers, sub.publishers
            await asyncio.to_thread(openai.OpenAI(base_url=env["cluster"].base_url + "/v1", api_key="x")
                                    .completions.create, model=MODEL, prompt=ids(40, 3), max_tokens=16)
            it = sub.__aiter__()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (got and got[-1].idle and len(got) > 2):
                try:
                    _, payload = await asyncio.wait_for(it.__anext__(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
                got.append(fpm_decoder.decode(payload))
            return got
        finally:
            await sub.close()
            await store.close()

    fpms = asyncio.run(run())
    busy = [f for f in fpms if f.scheduled_requests.num_decode_requests]
    assert busy, fpms
    assert all(f.worker_id == worker_hex for f in fpms)
    assert all(f.wall_time > 0 and f.scheduled_requests.sum_decode_kv_tokens > 0 for f in busy)
    assert fpms[-1].idle
