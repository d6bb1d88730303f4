"""The router's other faces, end to end: `python -m dynamo.router` as a service
(best_worker_id / get_overlap_scores / generate over the request plane) and two
frontends sharing their bookings with `--router-replica-sync`."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dynamo.llm.protocol import (
    PreprocessedRequest, RoutingHints, StopConditions, output_decoder, request_encoder,
)
from dynamo.router.service import OverlapScores, BestWorker, RouteQuery
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import (
    BLOCK,
    MODEL,
    SMALL_KV,
    complete,
    health,
    metrics,
    tokens,
    wait_indexed,
    worker_requests,
)

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 6
DYNAMO_ONLY_FLAGS = ("--router-event-threads", "4", "--serve-indexer", "--no-use-remote-indexer")


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("router-service"), tiny_model, "file")
    try:
        c.workers = [c.mocker(*SMALL_KV) for _ in range(2)]  # type: ignore[attr-defined]
        c.fe = []  # type: ignore[attr-defined]
        for _ in range(2):
            c.frontend("--router-mode", "kv", "--router-replica-sync")
            c.wait_workers(MODEL, 2)
            c.fe.append(c.base_url)
        # with flags of NVIDIA Dynamo 1.6.1's router that this one accepts without acting on them, and no
        # --router-block-size: it routes with the workers' block size (BLOCK) from their model cards
        c.router_port = free_port()  # type: ignore[attr-defined]  # its system server: /metrics
        c.router = c.start("dynamo.router", ["--endpoint", "dynamo.backend.generate",  # type: ignore[attr-defined]
                                             *DYNAMO_ONLY_FLAGS],
                           env={"DYN_SYSTEM_PORT": str(c.router_port)}, name="router")
        c.kv_root = str(c.tmp / "kv")  # type: ignore[attr-defined]
        yield c
    finally:
        c.stop()


async def _service_address(cluster, endpoint: str):
    """(the open discovery store, the router service's address for `endpoint`), once registered."""
    store = make_store("file", root=cluster.kv_root)
    await store.start()
    prefix = f"v1/instances/dynamo/router/{endpoint}/"  # NVIDIA Dynamo 1.6's component (kv-router too)
    for _ in range(100):
        found = await store.get_prefix(prefix)
        if found:
            break
        await asyncio.sleep(0.2)
    if not found:
        await store.close()
        raise AssertionError(f"router service endpoint {endpoint} not registered:\n{cluster.router.log()}")
    return store, msgspec.json.decode(next(iter(found.values())))["transport"]["tcp"]


async def _call(cluster, endpoint: str, payload: bytes) -> list[bytes]:
    store, address = await _service_address(cluster, endpoint)
    client = RequestPlaneClient()
    try:
        stream = await client.open_stream(address, endpoint, payload)
        return [p async for p in stream]
    finally:
        await client.close()
        await store.close()


def call(cluster, endpoint: str, payload: bytes) -> list[bytes]:
    return asyncio.run(_call(cluster, endpoint, payload))


def overlap_scores(cluster, prompt: list[int]) -> OverlapScores:
    (raw,) = call(cluster, "get_overlap_scores", msgspec.msgpack.encode(RouteQuery(token_ids=prompt)))
    return msgspec.msgpack.decode(raw, type=OverlapScores)


def best_worker(cluster, prompt: list[int]) -> BestWorker:
    (raw,) = call(cluster, "best_worker_id", msgspec.msgpack.encode(RouteQuery(token_ids=prompt)))
    return msgspec.msgpack.decode(raw, type=BestWorker)


def test_service_answers_best_worker_and_overlap_scores_consistently(cluster):
    prefix = tokens(11, PREFIX_BLOCKS * BLOCK)
    complete(cluster.fe[0], prefix + tokens(12, 8))
    wait_indexed(cluster.fe[0], PREFIX_BLOCKS)
    prompt = prefix + tokens(13, 40)
    wait_until(lambda: max(s.overlap_blocks for s in overlap_scores(cluster, prompt).scores) >= PREFIX_BLOCKS, 30,
               "the service to index the prefix")
    scores = overlap_scores(cluster, prompt)
    assert scores.block_size == BLOCK and len(scores.scores) == 2  # the cards' block size, not 128
    holder = max(scores.scores, key=lambda s: s.overlap_blocks)
    assert holder.overlap_blocks == PREFIX_BLOCKS
    assert sorted(s.overlap_blocks for s in scores.scores)[0] == 0
    # The frontend's index agrees on who holds it.
    indexed = health(cluster.fe[0])["router"]["models"][MODEL]["indexed_blocks"]
    assert indexed.get(f"{holder.worker_id}:0", 0) >= PREFIX_BLOCKS
    for _ in range(3):  # best_worker_id books nothing: asking again gives the same answer
        best = best_worker(cluster, prompt)
        assert (best.worker_id, best.overlap_blocks) == (holder.worker_id, PREFIX_BLOCKS)


def test_dynamo_router_flags_start_a_serving_router_and_say_why_they_do_nothing(cluster):
    """(It serves: the other tests of this module use it.)"""
    _, address = asyncio.run(_service_address(cluster, "best_worker_id"))
    assert address
    log = cluster.router.log()
    assert "--router-event-threads is accepted for compatibility with NVIDIA Dynamo" in log
    assert "--serve-indexer is accepted" in log and "use-remote-indexer" not in log  # turning off: no word


def test_service_generate_routes_and_streams(cluster):
    prefix = tokens(21, PREFIX_BLOCKS * BLOCK)
    complete(cluster.fe[0], prefix + tokens(22, 8))
    prompt = prefix + tokens(23, 20)
    wait_until(lambda: max(s.overlap_blocks for s in overlap_scores(cluster, prompt).scores) >= PREFIX_BLOCKS, 30,
               "the service to index the prefix")
    request = PreprocessedRequest(request_id=uuid.uuid4().hex, model=MODEL, token_ids=prompt,
                                  stop_conditions=StopConditions(max_tokens=5, ignore_eos=True))
    osl = "dynamo_component_router_output_sequence_tokens_sum"
    osl_before = metric_value(metrics(f"http://127.0.0.1:{cluster.router_port}"), osl) or 0.0
    outputs = [output_decoder.decode(p) for p in call(cluster, "generate", request_encoder.encode(request))]
    assert sum(len(o.token_ids) for o in outputs) == 5
    assert outputs[0].cached_tokens >= PREFIX_BLOCKS * BLOCK
    # The service counts what it relays: the router's output length, as Dynamo's standalone router reports it.
    assert metric_value(metrics(f"http://127.0.0.1:{cluster.router_port}"), osl) == osl_before + 5
    assert_one_family_per_name(metrics(f"http://127.0.0.1:{cluster.router_port}"))


def assert_one_family_per_name(text: str) -> None:
    """What Prometheus needs to take a scrape at all (promtool's "second HELP line for metric name"): a name
    is described once; its series all follow its one description."""
    described = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    twice = sorted({name for name in described if described.count(name) > 1})
    assert twice == [], twice
    assert list(text_string_to_metric_families(text))  # and it parses


def _active_blocks(base_url: str) -> float:
    return metric_value(metrics(base_url), "dynamo_frontend_worker_active_decode_blocks", {"model": MODEL}) or 0.0


def test_replicas_see_each_others_load(cluster):
    fe1, fe2 = cluster.fe
    assert _active_blocks(fe2) == 0
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(complete, fe1, tokens(30 + i, 10 * BLOCK), MODEL, 400) for i in range(2)]
        # fe2 routed nothing, yet it sees fe1's bookings.
        wait_until(lambda: _active_blocks(fe2) >= 20, 20, "fe1's bookings to reach fe2")
        assert health(fe2)["router"]["replica_events_applied"] >= 2
        for f in futures:
            f.result()
    wait_until(lambda: _active_blocks(fe2) == 0, 20, "fe1's frees to reach fe2")


def test_a_replica_avoids_the_worker_another_replica_loaded(tiny_model, tmp_path):
    """fe1 books one long request on worker W; fe2, which routed nothing, then sends N fresh
    prompts one by one: none may go to W. Without replica sync fe2 sees two idle workers
    and would pick W about half the time (all N avoid it with probability 2**-N)."""
    c = Cluster(tmp_path, tiny_model, "file")
    pool = ThreadPoolExecutor(1)
    try:
        workers = [c.mocker("--num-gpu-blocks-override", "256", "--block-size", str(BLOCK), "--speedup-ratio", "0.5")
                   for _ in range(2)]
        fes = []
        for _ in range(2):
            c.frontend("--router-mode", "kv", "--router-replica-sync")
            c.wait_workers(MODEL, 2)
            fes.append(c.base_url)
        fe1, fe2 = fes
        applied = health(fe2)["router"].get("replica_events_applied", 0)
        pool.submit(complete, fe1, tokens(40, 10 * BLOCK), MODEL, 1500)  # ends with the cluster
        wait_until(lambda: sum(worker_inflight(w) for w in workers) == 1, 30, "the long request running")
        (loaded,) = [i for i, w in enumerate(workers) if worker_inflight(w) == 1]
        wait_until(lambda: health(fe2)["router"]["replica_events_applied"] > applied
                   and _active_blocks(fe2) >= 10, 30, "fe1's booking to reach fe2")
        for n in range(6):
            before = [worker_requests(w) for w in workers]
            complete(fe2, tokens(60 + n, 2 * BLOCK), MODEL, 2)
            served = [i for i, w in enumerate(workers) if worker_requests(w) > before[i]]
            assert served == [1 - loaded], (n, served, loaded)
        assert worker_inflight(workers[loaded]) == 1, "the long request ended early: the test proved nothing"
    finally:
        c.stop()
        pool.shutdown(wait=True)


def worker_inflight(proc) -> float:
    return metric_value(http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode(),
                        "dynamo_component_inflight_requests") or 0.0


def test_a_router_that_starts_late_learns_existing_caches_from_the_workers(cluster):
    """Blocks cached before a router subscribed arrive through `worker_kv_indexer_query`."""
    prefix = tokens(51, PREFIX_BLOCKS * BLOCK)
    complete(cluster.fe[0], prefix + tokens(52, 8))
    wait_indexed(cluster.fe[0], PREFIX_BLOCKS)
    late = cluster.start("dynamo.router", ["--endpoint", "dynamo.backend.generate", "--router-block-size", str(BLOCK)],
                         name="late-router")
    try:
        wait_until(lambda: late.log_path.read_text().count("re-synced KV state") == len(cluster.workers), 30,
                   "the late router to re-sync every worker")
        # No request has been made since: only the dumps can have told it.
        frontend_view = health(cluster.fe[0])["router"]["models"][MODEL]["indexed_blocks"]
        text = late.log_path.read_text()
        synced = sum(int(line.rsplit(": ", 1)[1].split()[0]) for line in text.splitlines()
                     if "re-synced KV state" in line)
        assert synced == sum(frontend_view.values())
    finally:
        late.stop()


def test_generate_cancelled_before_the_first_output_frees_the_booking(tiny_model, tmp_path):
    """The caller goes away while the worker still prefills (nothing streamed yet): the service
    frees its booking and cancels the worker's stream. (It once kept the booking, with no TTL,
    for as long as the worker stayed registered, and the worker ran the request to the end.)"""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        # Slow chunked prefill: seconds before the first output of a 1,000-token prompt.
        worker = c.mocker("--speedup-ratio", "0.002", "--max-num-batched-tokens", "64", "--block-size", str(BLOCK))
        port = free_port()
        c.router = c.start("dynamo.router", ["--endpoint", "dynamo.backend.generate", "--router-block-size",
                                             str(BLOCK)], env={"DYN_SYSTEM_PORT": str(port)}, name="router")
        c.kv_root = str(c.tmp / "kv")
        asyncio.run(_cancel_before_first_output(c, f"http://127.0.0.1:{port}", worker))
    finally:
        c.stop()


async def _cancel_before_first_output(cluster, router_url: str, worker) -> None:
    def booked() -> float:
        return metric_value(metrics(router_url), "dynamo_component_worker_active_decode_blocks") or 0.0

    def worker_metric(name: str, labels: dict | None = None) -> float:
        return metric_value(metrics(f"http://127.0.0.1:{worker.system_port}"), name, labels) or 0.0

    request = PreprocessedRequest(request_id=uuid.uuid4().hex, model=MODEL, token_ids=tokens(71, 1000),
                                  stop_conditions=StopConditions(max_tokens=5, ignore_eos=True))
    client, store, stream = RequestPlaneClient(), None, None
    try:
        store, address = await _service_address(cluster, "generate")
        await asyncio.to_thread(wait_until, lambda: "_worker_active_decode_blocks{" in metrics(router_url), 60,
                                "the service to see the worker")
        stream = await client.open_stream(address, "generate", request_encoder.encode(request))
        await asyncio.to_thread(wait_until, lambda: booked() > 0 and worker_metric(
            "dynamo_component_inflight_requests") == 1, 60, "the request booked and prefilling")
        stream.cancel()
        await asyncio.to_thread(wait_until, lambda: booked() == 0, 30, "the service to free its booking")
        await asyncio.to_thread(wait_until, lambda: worker_metric(
            "dynamo_component_cancellation_total", {"dynamo_endpoint": "generate"}) == 1, 30,
            "the worker to see the cancel")
        assert worker_metric("dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) == 1  # that one
    finally:
        await client.close()
        if store is not None:
            await store.close()


def test_a_router_pointed_at_the_wrong_component_says_where_the_workers_are(tiny_model, tmp_path):
    """Dynamo's users' common slip (a pool router's --endpoint naming `prefill` where the workers serve
    `backend`): the 'no workers' answer, and a warning if it lasts, name the endpoints that do serve."""
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        c.mocker("--block-size", str(BLOCK))
        c.router = c.start("dynamo.router", ["--endpoint", "dynamo.prefill.generate"], name="router")
        c.kv_root = str(c.tmp / "kv")
        request = PreprocessedRequest(request_id="r1", model=MODEL, token_ids=tokens(5, 20),
                                      stop_conditions=StopConditions(max_tokens=2))

        def answer() -> str:
            try:
                call(c, "generate", request_encoder.encode(request))
            except Exception as exc:  # the service's typed error, raised by the request-plane client
                return str(exc)
            return "answered"
        wait_until(lambda: "dynamo.backend.generate (1)" in answer(), 30, "the hint naming the workers' endpoint")
        assert "not dynamo.prefill.generate: check --endpoint" in answer()
    finally:
        c.stop()


def test_a_crashed_replicas_load_is_freed_on_the_others(cluster):
    """A third replica books two long streams and is killed (SIGKILL: no frees sent). The surviving
    replica stops counting that load once the dead one has been silent for replica_sync.SILENT_AFTER,
    instead of keeping it booked for good."""
    fe2 = cluster.fe[1]
    wait_until(lambda: _active_blocks(fe2) == 0, 60, "earlier tests' load to end")
    doomed = cluster.frontend("--router-mode", "kv", "--router-replica-sync")
    cluster.wait_workers(MODEL, 2)
    url = cluster.base_url
    peers = health(fe2)["router"]["replica_peers_alive"]

    def heard_from_the_new_replica() -> bool:  # it joins on its first request; its heartbeats follow
        complete(url, tokens(69, BLOCK))
        return health(fe2)["router"]["replica_peers_alive"] > peers
    wait_until(heard_from_the_new_replica, 30, "fe2 to hear the new replica say it is alive", interval=0.5)
    pool = ThreadPoolExecutor(2)
    try:
        for i in range(2):
            pool.submit(lambda i=i: httpx.post(url + "/v1/completions", timeout=60, json={
                "model": MODEL, "prompt": tokens(70 + i, 10 * BLOCK), "max_tokens": 400}))
        wait_until(lambda: _active_blocks(fe2) >= 20, 20, "the doomed replica's bookings to reach fe2")
        doomed.kill()
        wait_until(lambda: _active_blocks(fe2) == 0, 40, "the dead replica's bookings to be freed on fe2")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _error(cluster, endpoint: str, payload: bytes) -> str:
    with pytest.raises(Exception) as caught:  # the service's typed error, raised by the request-plane client
        call(cluster, endpoint, payload)
    return str(caught.value)


@pytest.mark.parametrize(("override", "said"), [
    ({"overlap_score_weight": float("nan")}, "router_config_override.overlap_score_weight must be finite and >= 0"),
    ({"router_temperature": -5.0}, "router_config_override.router_temperature must be finite and >= 0"),
    ({"overlap_score_wieght": 1.0}, "unknown key 'overlap_score_wieght' (keys: overlap_score_weight, "
                                    "router_temperature)"),
])
def test_a_bad_router_config_override_is_the_callers_error_named(cluster, override, said):
    query = RouteQuery(token_ids=tokens(31, 40), router_config_override=override)
    assert said in _error(cluster, "best_worker_id", msgspec.msgpack.encode(query))
    good = RouteQuery(token_ids=tokens(31, 40), router_config_override={"router_temperature": 0.5})
    (raw,) = call(cluster, "best_worker_id", msgspec.msgpack.encode(good))  # a good one still answers
    workers = {s.worker_id for s in overlap_scores(cluster, tokens(31, 40)).scores}
    assert msgspec.msgpack.decode(raw, type=BestWorker).worker_id in workers


@pytest.mark.parametrize("hint", ["backend_instance_id", "decode_worker_id"])
def test_a_request_pinned_to_a_worker_the_pool_lacks_is_the_callers_error_named(cluster, hint):
    request = PreprocessedRequest(request_id=uuid.uuid4().hex, model=MODEL, token_ids=tokens(32, 20),
                                  stop_conditions=StopConditions(max_tokens=2),
                                  routing=RoutingHints(**{hint: 0xDEADBEEF}))
    said = _error(cluster, "generate", request_encoder.encode(request))
    assert f"No worker with instance id {0xDEADBEEF} (deadbeef) serves dynamo.backend.generate (routing hint {hint})" \
        in said and "check --endpoint" not in said
