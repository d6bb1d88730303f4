"""KV-aware routing in the frontend, end to end: a frontend `--router-mode kv` and mockers
with small KV caches as real processes on the brokerless (ZMQ) event plane."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest

from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import (
    BLOCK,
    MODEL,
    SMALL_KV,
    cached_tokens,
    complete,
    health,
    metrics,
    route_info,
    tokens,
    wait_indexed,
    worker_requests,
)

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 8


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("kv-routing"), tiny_model, "file")
    try:
        c.workers = [c.mocker(*SMALL_KV) for _ in range(3)]  # type: ignore[attr-defined]
        c.noev = [c.mocker(*SMALL_KV, "--no-enable-prefix-caching", model_name="noev")  # type: ignore[attr-defined]
                  for _ in range(2)]
        c.frontend("--router-mode", "kv")
        c.wait_workers(MODEL, 3)
        c.wait_workers("noev", 2)
        yield c
    finally:
        c.stop()


def _holder(cluster, before: list[float]) -> list[int]:
    return [i for i, w in enumerate(cluster.workers) if worker_requests(w) > before[i]]


def test_shared_prefix_goes_to_the_worker_that_holds_it(cluster):
    prefix = tokens(1, PREFIX_BLOCKS * BLOCK)
    before = [worker_requests(w) for w in cluster.workers]
    first = complete(cluster.base_url, prefix + tokens(100, 10))
    assert cached_tokens(first) == 0
    holder = _holder(cluster, before)
    assert len(holder) == 1
    wait_indexed(cluster.base_url, PREFIX_BLOCKS)
    before = [worker_requests(w) for w in cluster.workers]
    for i in range(4):
        body = complete(cluster.base_url, prefix + tokens(200 + i, 10))
        assert cached_tokens(body) >= PREFIX_BLOCKS * BLOCK
    after = [worker_requests(w) for w in cluster.workers]
    assert [a - b for a, b in zip(after, before)] == [4.0 if i == holder[0] else 0.0 for i in range(3)]
    # A different prefix is free to go elsewhere, and then sticks there too.
    other = tokens(2, PREFIX_BLOCKS * BLOCK)
    complete(cluster.base_url, other + tokens(300, 10))
    wait_until(lambda: sum(route_info(cluster.base_url)["indexed_blocks"].values()) >= 2 * PREFIX_BLOCKS, 20,
               "second prefix indexed")
    assert cached_tokens(complete(cluster.base_url, other + tokens(301, 10))) >= PREFIX_BLOCKS * BLOCK


def test_health_and_metrics_say_kv_events_mode(cluster):
    # Its own traffic (no reliance on earlier tests): a prefix, indexed, then hit once.
    prefix = tokens(11, PREFIX_BLOCKS * BLOCK)
    indexed = sum(route_info(cluster.base_url).get("indexed_blocks", {}).values())
    generate = {"dynamo_namespace": "dynamo", "dynamo_component": "backend"}  # what the SLA planner reads
    hits_before = metric_value(metrics(cluster.base_url), "dynamo_component_router_kv_hit_rate_sum", generate) or 0.0
    routed_before = metric_value(metrics(cluster.base_url), "dynamo_component_router_requests_total", generate) or 0.0
    ttfts_before = metric_value(metrics(cluster.base_url), "dynamo_component_router_time_to_first_token_seconds_count",
                                generate) or 0.0
    osl, itl = "dynamo_component_router_output_sequence_tokens", "dynamo_component_router_inter_token_latency_seconds"
    osl_before = metric_value(metrics(cluster.base_url), f"{osl}_sum", generate) or 0.0
    itls_before = metric_value(metrics(cluster.base_url), f"{itl}_count", generate) or 0.0
    decisions_before = metric_value(metrics(cluster.base_url), "dynamo_router_overhead_total_ms_count") or 0.0
    first = complete(cluster.base_url, prefix + tokens(500, 10))
    wait_until(lambda: sum(route_info(cluster.base_url)["indexed_blocks"].values()) >= indexed + PREFIX_BLOCKS, 20,
               "the prefix indexed")
    second = complete(cluster.base_url, prefix + tokens(501, 10))
    assert cached_tokens(second) >= PREFIX_BLOCKS * BLOCK
    info = route_info(cluster.base_url)
    assert info["mode"] == "kv-events", info
    assert "publish KV events" in info["reason"]
    text = metrics(cluster.base_url)
    assert metric_value(text, "dynamo_frontend_router_mode", {"model": MODEL, "mode": "kv-events"}) == 1.0
    assert metric_value(text, "dynamo_frontend_router_mode", {"model": MODEL, "mode": "approximate"}) == 0.0
    assert metric_value(text, "dynamo_component_kv_cache_events_applied_total",
                        {"event_type": "stored", "status": "ok"}) > 0
    assert metric_value(text, "dynamo_frontend_router_kv_hit_rate", {"model": MODEL}) > 0
    assert metric_value(text, "dynamo_frontend_router_decision_seconds_count", {"model": MODEL}) >= 1
    assert metric_value(text, "dynamo_frontend_router_overlap_blocks_sum", {"model": MODEL}) >= PREFIX_BLOCKS
    decode = {"model": MODEL, "worker_type": "decode"}
    assert metric_value(text, "dynamo_frontend_worker_active_decode_blocks", decode) is not None
    assert metric_value(text, "dynamo_frontend_router_queue_pending_requests", decode) == 0
    assert metric_value(text, "dynamo_frontend_worker_active_prefill_tokens", {"model": MODEL}) is not None
    # Dynamo's router request metrics: two more routed, the second finding 8 of its 9 blocks cached.
    assert metric_value(text, "dynamo_component_router_requests_total", generate) == routed_before + 2
    hits = metric_value(text, "dynamo_component_router_kv_hit_rate_sum", generate) - hits_before
    assert hits == pytest.approx(PREFIX_BLOCKS / (PREFIX_BLOCKS + 1), abs=0.01), hits
    ttfts = "dynamo_component_router_time_to_first_token_seconds_count"
    assert metric_value(text, ttfts, generate) == ttfts_before + 2
    # ... their output lengths as the client got them, a mean ITL each, and each decision's overhead.
    generated = [body["usage"]["completion_tokens"] for body in (first, second)]
    assert metric_value(text, f"{osl}_sum", generate) == osl_before + sum(generated)
    assert metric_value(text, f"{itl}_count", generate) == itls_before + sum(n > 1 for n in generated) == \
        itls_before + 2
    assert metric_value(text, "dynamo_router_overhead_total_ms_count") == decisions_before + 2


def test_no_events_reports_approximate_mode(cluster):
    info = route_info(cluster.base_url, "noev")
    assert info["mode"] == "approximate"
    assert "publishes KV events" in info["reason"]
    text = metrics(cluster.base_url)
    assert metric_value(text, "dynamo_frontend_router_mode", {"model": "noev", "mode": "approximate"}) == 1.0
    assert metric_value(text, "dynamo_frontend_router_mode", {"model": "noev", "mode": "kv-events"}) == 0.0
    frontend_log = cluster.procs[-1].log_path.read_text()
    assert "WARNING" in frontend_log and "KV routing mode approximate" in frontend_log
    # Approximate mode still routes, and remembers its own decisions: with two workers, the
    # same prefix goes back to the worker that served it first.
    prefix = tokens(5, 4 * BLOCK)
    for i in range(3):
        before = [worker_requests(w) for w in cluster.noev]
        body = complete(cluster.base_url, prefix + tokens(600 + i, 8), model="noev")
        assert body["usage"]["prompt_tokens"] == 4 * BLOCK + 8
        served = [j for j, w in enumerate(cluster.noev) if worker_requests(w) > before[j]]
        assert len(served) == 1
        if i == 0:
            first = served[0]
        assert served == [first]
    assert route_info(cluster.base_url, "noev")["mode"] == "approximate"


def test_no_router_kv_events_routes_a_repeated_prefix_to_one_worker(cluster):
    """`--no-router-kv-events` over workers that DO publish: the frontend subscribes to nothing,
    says approximate mode, and still sends a repeated prefix back to the worker it chose first,
    crediting the overlap it predicted from its own decisions."""
    port = free_port()
    proc = cluster.start("dynamo.frontend", ["--http-host", "127.0.0.1", "--http-port", str(port),
                                             "--router-mode", "kv", "--no-router-kv-events"])
    url = f"http://127.0.0.1:{port}"
    try:
        live = [w for w in cluster.workers if w.alive()]
        wait_until(lambda: sum(1 for i in health(url)["instances"] if i.get("model") == MODEL) == len(live), 60,
                   "the workers at the approximate-mode frontend")
        prefix = tokens(21, PREFIX_BLOCKS * BLOCK)
        served = []
        for i in range(4):
            before = [worker_requests(w) for w in live]
            complete(url, prefix + tokens(700 + i, 10))
            served += [j for j, w in enumerate(live) if worker_requests(w) > before[j]]
        assert len(served) == 4 and len(set(served)) == 1, served
        info = route_info(url)
        assert info["mode"] == "approximate" and "--no-router-kv-events" in info["reason"], info
        text = http_get(url + "/metrics")[1].decode()
        assert metric_value(text, "dynamo_frontend_router_mode", {"model": MODEL, "mode": "approximate"}) == 1.0
        assert metric_value(text, "dynamo_frontend_router_overlap_blocks_sum", {"model": MODEL}) >= 3 * PREFIX_BLOCKS
        assert not metric_value(text, "dynamo_component_kv_cache_events_applied_total",
                                {"event_type": "stored", "status": "ok"})  # no subscription at all
    finally:
        proc.stop()


def test_pinned_requests_go_to_the_named_worker(cluster):
    """nvext.backend_instance_id and the x-worker-instance-id header pin a request to one worker,
    whatever the router would pick; an unknown worker is the client's error."""
    url = cluster.base_url + "/v1/completions"
    ids = route_info(cluster.base_url)["workers"]
    served = set()
    for n, iid in enumerate(ids[:2]):
        before = [worker_requests(w) for w in cluster.workers]
        for i, (extra, headers) in enumerate([({"nvext": {"backend_instance_id": iid}}, {}),
                                              ({}, {"x-worker-instance-id": str(iid)}),
                                              ({}, {"x-dynamo-worker-instance-id": str(iid)})]):
            body = {"model": MODEL, "prompt": tokens(700 + 10 * n + i, 40), "max_tokens": 2, **extra}
            assert httpx.post(url, json=body, headers=headers, timeout=60).status_code == 200
        holders = [i for i, w in enumerate(cluster.workers) if worker_requests(w) > before[i]]
        assert len(holders) == 1 and worker_requests(cluster.workers[holders[0]]) == before[holders[0]] + 3
        served.add(holders[0])
    assert len(served) == 2  # two ids, two workers
    missing = max(ids) + 1
    resp = httpx.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 2,
                                 "nvext": {"backend_instance_id": missing}}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "worker_not_found", resp.text
    resp = httpx.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 2},
                      headers={"x-worker-instance-id": "not-a-number"}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "x-worker-instance-id", resp.text


def test_token_data_with_a_named_worker_is_the_prompt(cluster):
    """nvext.token_data (an external router's own tokenization of the request) is the prompt when the
    request names its worker: the worker gets exactly those ids, so a prefix they share with an
    earlier prompt there is cached. Without a worker named, the frontend tokenizes the messages
    itself. Malformed ids are a 400 naming the field."""
    url = cluster.base_url + "/v1/chat/completions"
    iid = route_info(cluster.base_url)["workers"][2]
    ids = tokens(980, PREFIX_BLOCKS * BLOCK)
    httpx.post(cluster.base_url + "/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": ids, "max_tokens": 2, "nvext": {"backend_instance_id": iid}}).raise_for_status()
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    pinned = httpx.post(url, timeout=60, json={**chat, "nvext": {"token_data": ids + [7, 8], "backend_instance_id": iid}})
    assert pinned.status_code == 200, pinned.text
    assert pinned.json()["usage"]["prompt_tokens"] == len(ids) + 2
    assert cached_tokens(pinned.json()) >= (PREFIX_BLOCKS - 1) * BLOCK
    by_header = httpx.post(url, timeout=60, json={**chat, "nvext": {"token_data": ids}},
                           headers={"x-worker-instance-id": str(iid)}).json()
    assert by_header["usage"]["prompt_tokens"] == len(ids)
    unpinned = httpx.post(url, timeout=60, json={**chat, "nvext": {"token_data": ids}}).json()
    assert unpinned["usage"]["prompt_tokens"] < 50  # the rendered "hello", not the ids
    for bad in ("1 2 3", [], [1, "2"], [1, True], [-1], [10**9]):
        for named in ({}, {"backend_instance_id": iid}):
            resp = httpx.post(url, timeout=60, json={**chat, "nvext": {"token_data": bad, **named}})
            if bad in ([-1], [10**9]) and not named:
                assert resp.status_code == 200, resp.text  # ids in range are checked only where they are used
                continue
            assert resp.status_code == 400 and resp.json()["error"]["param"] == "nvext.token_data", (bad, resp.text)


def test_worker_that_leaves_is_dropped_from_the_index(cluster):
    prefix = tokens(3, PREFIX_BLOCKS * BLOCK)
    before = [worker_requests(w) for w in cluster.workers]
    complete(cluster.base_url, prefix + tokens(400, 10))
    (holder,) = _holder(cluster, before)
    gone = cluster.workers[holder]
    wait_indexed(cluster.base_url, PREFIX_BLOCKS)
    gone_id = _instance_of(gone)
    gone.kill(signal.SIGTERM)
    wait_until(lambda: gone_id not in route_info(cluster.base_url)["workers"], 30, "worker dropped from the router")
    info = route_info(cluster.base_url)
    assert not any(key.startswith(f"{gone_id}:") for key in info["indexed_blocks"])
    assert all(i["instance_id"] != gone_id for i in health(cluster.base_url)["instances"])
    survivors = [w for w in cluster.workers if w is not gone]
    before = [worker_requests(w) for w in survivors]
    for i in range(3):
        complete(cluster.base_url, prefix + tokens(500 + i, 10))
    assert sum(worker_requests(w) for w in survivors) - sum(before) == 3


def _instance_of(proc) -> int:
    """A mocker's instance id, from its log line "serving ns.backend.generate as instance <hex>"."""
    marker = " as instance "
    line = next(line for line in proc.log_path.read_text().splitlines() if marker in line and ".generate" in line)
    return int(line.split(marker)[1].split()[0], 16)



def test_the_response_names_its_worker_and_timing_when_asked(cluster):
    """nvext.extra_fields: the worker the request was pinned to, in the unary body and in a streamed
    chunk of its own; timing with the KV router's hit rate, which a repeated prefix raises."""
    url = cluster.base_url + "/v1/completions"
    iid = route_info(cluster.base_url)["workers"][0]
    prompt = tokens(900, PREFIX_BLOCKS * BLOCK)
    ask = {"extra_fields": ["worker_id", "timing", "not_a_field"], "backend_instance_id": iid}
    first = httpx.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": 3, "nvext": ask}, timeout=60).json()
    assert first["nvext"]["worker_id"] == {"prefill_worker_id": iid, "prefill_dp_rank": 0, "decode_worker_id": iid,
                                           "decode_dp_rank": 0}
    timing = first["nvext"]["timing"]
    assert timing["kv_hit_rate"] == 0.0 and 0 < timing["ttft_ms"] <= timing["total_time_ms"]
    assert timing["prefill_wait_time_ms"] + timing["prefill_time_ms"] == pytest.approx(timing["ttft_ms"], abs=0.01)
    assert timing["prefill_wait_time_ms"] > 0 and timing["prefill_time_ms"] > 0
    labels = {"worker_id": str(iid), "dp_rank": "0", "worker_type": "decode"}  # Dynamo's per-worker gauges
    text = metrics(cluster.base_url)
    assert metric_value(text, "dynamo_frontend_worker_last_time_to_first_token_seconds", labels) > 0
    assert metric_value(text, "dynamo_frontend_worker_last_input_sequence_tokens", labels) == len(prompt)
    assert metric_value(text, "dynamo_frontend_worker_last_inter_token_latency_seconds", labels) > 0
    assert abs(timing["request_received_ms"] / 1000 - time.time()) < 120
    wait_indexed(cluster.base_url, PREFIX_BLOCKS)
    with httpx.stream("POST", url, timeout=60, json={"model": MODEL, "prompt": prompt, "max_tokens": 3,
                                                     "stream": True, "nvext": ask}) as resp:
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    assert [c for c in chunks if "nvext" in c] == [chunks[-1]] and chunks[-1]["choices"] == []
    assert chunks[-1]["nvext"]["worker_id"]["decode_worker_id"] == iid
    assert chunks[-1]["nvext"]["timing"]["kv_hit_rate"] > 0.9  # the prompt's full blocks, cached there
    plain = httpx.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60).json()
    assert "nvext" not in plain
    bad = httpx.post(url, json={"model": MODEL, "prompt": "x", "max_tokens": 2, "nvext": {"extra_fields": "timing"}},
                     timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "nvext.extra_fields", bad.text


def test_a_cache_salt_is_a_namespace_in_the_router_and_the_engine(cluster):
    """nvext.cache_salt (or vLLM's top-level `cache_salt`, or an `x-tenant-id` header, which wins): a
    prompt cached under one tenant's salt is a hit, in the router's index and in the worker's cache,
    only for that tenant; unsalted, or under another salt, the same tokens find nothing on the same
    worker."""
    url = cluster.base_url + "/v1/completions"
    iid = route_info(cluster.base_url)["workers"][1]
    prompt = tokens(950, PREFIX_BLOCKS * BLOCK)

    def ask(headers=None, **fields) -> tuple[int, float]:
        nvext = {"extra_fields": ["timing"], "backend_instance_id": iid, **fields.pop("nvext", {})}
        body = httpx.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": 2, "nvext": nvext, **fields},
                          headers=headers, timeout=60).json()
        return cached_tokens(body), body["nvext"]["timing"]["kv_hit_rate"]

    indexed = sum(route_info(cluster.base_url)["indexed_blocks"].values())
    assert ask(nvext={"cache_salt": "tenant-a"}) == (0, 0.0)
    wait_until(lambda: sum(route_info(cluster.base_url)["indexed_blocks"].values()) >= indexed + PREFIX_BLOCKS, 20,
               "the salted prompt indexed")
    cached, hit = ask(nvext={"cache_salt": "tenant-a"})
    assert cached >= (PREFIX_BLOCKS - 1) * BLOCK and hit > 0.9  # the tenant's own prefix: cached, and known so
    assert ask(cache_salt="tenant-a")[0] >= (PREFIX_BLOCKS - 1) * BLOCK  # vLLM's top-level spelling
    assert ask() == (0, 0.0)  # unsalted: the same tokens, another namespace
    assert ask(headers={"x-tenant-id": "tenant-b"}, nvext={"cache_salt": "tenant-a"}) == (0, 0.0)
    bad = httpx.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": 2, "nvext": {"cache_salt": 5}},
                     timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "nvext.cache_salt", bad.text


def _annotation_events(text: str) -> dict:
    """The `event:` blocks of an SSE body, each name to its value (the JSON on its comment line)."""
    events = {}
    for part in text.split("\n\n"):
        lines = part.split("\n")
        if lines[0].startswith("event: "):
            assert lines[1].startswith(": "), part
            events[lines[0][7:]] = json.loads(lines[1][2:])
    return events


def test_query_instance_id_names_the_route_and_generates_nothing(cluster):
    """nvext.annotations ["query_instance_id"] (an inference gateway's first step): the worker the KV
    router would pick and the prompt's token ids, as SSE events (streamed) or a response nvext (unary);
    nothing generated, nothing booked. Sent there with those ids (the gateway's second step), the prompt hits its cache."""
    base, url = cluster.base_url, cluster.base_url + "/v1/completions"
    iid = route_info(base)["workers"][1]
    prompt, key = tokens(1100, PREFIX_BLOCKS * BLOCK), f"{iid}:0"
    indexed = route_info(base)["indexed_blocks"].get(key, 0)
    httpx.post(url, timeout=60, json={"model": MODEL, "prompt": prompt + tokens(1101, 5), "max_tokens": 2,
                                      "nvext": {"backend_instance_id": iid}}).raise_for_status()
    wait_until(lambda: route_info(base)["indexed_blocks"].get(key, 0) >= indexed + PREFIX_BLOCKS, 20, "indexed")
    live = [w for w in cluster.workers if w.alive()]  # an earlier test stops one
    served = [worker_requests(w) for w in live]
    routed = metric_value(metrics(base), "dynamo_frontend_router_requests_total", {"model": MODEL})
    query = prompt + tokens(1102, 7)
    ask = {"model": MODEL, "prompt": query, "max_tokens": 4, "nvext": {"annotations": ["query_instance_id"]}}
    resp = httpx.post(url, timeout=60, json={**ask, "stream": True})
    assert resp.status_code == 200 and resp.headers["content-type"] == "text/event-stream", resp.text
    assert _annotation_events(resp.text) == {"worker_instance_id": str(iid), "token_data": query}
    assert "choices" not in resp.text and resp.text.endswith("data: [DONE]\n\n")
    unary = httpx.post(url, timeout=60, json=ask).json()
    assert unary["choices"] == [] and unary["nvext"] == {"worker_id": {"decode_worker_id": iid}, "token_ids": query}
    assert [worker_requests(w) for w in live] == served
    assert metric_value(metrics(base), "dynamo_frontend_router_requests_total", {"model": MODEL}) == routed
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "route me"}], "max_tokens": 2}
    answer = httpx.post(base + "/v1/chat/completions", timeout=60,
                        json={**chat, "stream": True, "nvext": {"annotations": ["query_instance_id"]}})
    chosen = _annotation_events(answer.text)
    sent = httpx.post(base + "/v1/chat/completions", timeout=60, json={**chat, "nvext": {
        "backend_instance_id": int(chosen["worker_instance_id"]), "token_data": chosen["token_data"],
        "extra_fields": ["worker_id"]}}).json()
    assert sent["nvext"]["worker_id"]["decode_worker_id"] == int(chosen["worker_instance_id"])
    unpinned = httpx.post(base + "/v1/chat/completions", timeout=60, json=chat).json()
    assert sent["usage"]["prompt_tokens"] == len(chosen["token_data"]) == unpinned["usage"]["prompt_tokens"]
    bad = httpx.post(url, timeout=60, json={"model": MODEL, "prompt": "x", "nvext": {"annotations": "request_id"}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "nvext.annotations", bad.text


def test_a_request_id_annotation_opens_the_stream_with_its_id(cluster):
    """nvext.annotations ["request_id"]: the stream's first event is the request's id, the client's
    x-dynamo-request-id when it sent one; the chunks that follow are the usual ones."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True,
            "nvext": {"annotations": ["request_id"]}}
    chosen = "3f2c1d52-8a64-4b1e-9a3c-0d6f2b7e9a11"
    for headers in ({}, {"x-dynamo-request-id": chosen}):
        with httpx.stream("POST", cluster.base_url + "/v1/chat/completions", json=body, headers=headers,
                          timeout=60) as resp:
            text = resp.read().decode()
        first, rest = text.split("\n\n", 1)
        request_id = _annotation_events(first)["request_id"]
        assert request_id == headers.get("x-dynamo-request-id", request_id) and len(request_id) >= 32
        chunks = [json.loads(line[6:]) for line in rest.splitlines() if line.startswith("data: {")]
        assert chunks and all(c["id"].startswith("chatcmpl-" + request_id) for c in chunks), chunks[0]
        assert text.endswith("data: [DONE]\n\n")


def test_prompt_annotations_open_the_stream_with_the_prompt_the_model_got(cluster):
    """nvext.annotations ["request_id", "formatted_prompt", "token_ids"]: after the id, the chat as the
    template rendered it and its token ids (as many as the usage counts), before any chunk. Sent on with
    the gateway's token_data to a named worker, the ids are not echoed back."""
    names = ["request_id", "formatted_prompt", "token_ids"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "tell me about lighthouses"}], "max_tokens": 3,
            "stream": True, "stream_options": {"include_usage": True}, "nvext": {"annotations": names}}
    text = httpx.post(cluster.base_url + "/v1/chat/completions", json=body, timeout=60).text
    opening = text.split("data: ", 1)[0]
    events = _annotation_events(opening)
    assert list(events) == names, opening
    assert "tell me about lighthouses" in events["formatted_prompt"]
    assert events["formatted_prompt"] != "tell me about lighthouses"  # the template wrapped it
    ids = json.loads(events["token_ids"])
    usage = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")][-1]["usage"]
    assert len(ids) == usage["prompt_tokens"] and all(type(i) is int for i in ids)
    worker = route_info(cluster.base_url)["workers"][0]
    routed = dict(body, nvext={"annotations": names, "backend_instance_id": worker, "token_data": ids})
    again = _annotation_events(httpx.post(cluster.base_url + "/v1/chat/completions", json=routed,
                                          timeout=60).text.split("data: ", 1)[0])
    assert list(again) == ["request_id", "formatted_prompt"]
