"""Worker sets in the dispatcher: while a model's workers span two namespaces (a managed rolling update), every
disaggregated request is prefilled and decoded by workers of one namespace, both namespaces get traffic, a set
without prefill workers prefills on its decode worker (never on another set's prefill worker), and a request whose
set lost its last decode worker moves to the other set and is prefilled again there. Over real request-plane
workers (`ScriptedWorker`s whose prefill answers name their namespace) and the real `Dispatcher`."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from dynamo.frontend.disagg import DisaggMetrics, DisaggPolicy, PrefillOrchestrator
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.model_routes import health_report
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.worker_sets import STRAY_RETRIES, SetRouting
from dynamo.llm.model_card import ModelDeploymentCard, WorkerType
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, RoutingHints, StopConditions
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import Choice, RoundRobinPolicy, Role, WorkerInfo
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.procs import free_port
from tests.fixtures.scripted_worker import ScriptedWorker


class NamespacedWorker(ScriptedWorker):
    """A scripted worker in one namespace: as a prefill worker it answers transfer parameters naming it."""

    def __init__(self, namespace: str, prefill: bool) -> None:
        super().__init__(count=2)
        self.namespace, self.prefill = namespace, prefill

    async def generate(self, request: PreprocessedRequest, ctx):
        if not self.prefill:
            async for out in super().generate(request, ctx):
                yield out
            return
        self.requests.append(request)
        yield LLMEngineOutput(token_ids=[7], finish_reason="length",
                              disaggregated_params={"transfer": "test", "namespace": self.namespace})


def card(worker_type: WorkerType) -> ModelDeploymentCard:
    c = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096, kv_cache_block_size=16,
                            worker_type=worker_type)
    c.mdcsum = "same"
    return c


def info(iid: int, worker: NamespacedWorker, address: str | None = None) -> WorkerInfo:
    kind = WorkerType.PREFILL if worker.prefill else WorkerType.DECODE
    eid = EndpointId(worker.namespace, "prefill" if worker.prefill else "backend", "generate")
    return WorkerInfo(iid, eid, card(kind), address or worker.address)


@pytest.fixture
async def plane():
    client = RequestPlaneClient()
    started: list[NamespacedWorker] = []

    async def start(namespace: str, prefill: bool) -> NamespacedWorker:
        worker = NamespacedWorker(namespace, prefill)
        await worker.server.start()
        started.append(worker)
        return worker
    try:
        yield client, start
    finally:
        await client.close()
        for worker in started:
            await worker.server.close(linger=0.1)


def dispatcher(client: RequestPlaneClient, metrics: FrontendMetrics | None = None, policy=None,
               inhibitor: Inhibitor | None = None, disagg: DisaggPolicy | None = None) -> Dispatcher:
    """As `__main__` builds them: one SetRouting (with the frontend's inhibitor) for both."""
    metrics = metrics or FrontendMetrics()
    inhibitor = inhibitor or Inhibitor(0)
    sets = SetRouting(random.Random(42), metrics.worker_set_requests, inhibitor)
    prefill = PrefillOrchestrator(client, RoundRobinPolicy(), disagg or DisaggPolicy(),
                                  DisaggMetrics(CollectorRegistry(), "t"), inhibitor=inhibitor, sets=sets)
    return Dispatcher(client, policy or RoundRobinPolicy(), 3, metrics, prefill, inhibitor, sets=sets)


async def run(d: Dispatcher, entry: ModelEntry, rid: str, hints: RoutingHints | None = None) -> RequestHandle:
    handle = RequestHandle()
    request = PreprocessedRequest(request_id=rid, model="m", token_ids=list(range(64)),
                                  stop_conditions=StopConditions(max_tokens=2), routing=hints)

    async def drain():
        return [out async for batch in d.stream(entry, request, handle, "same") for out in batch]
    assert [o.token_ids for o in await asyncio.wait_for(drain(), 30)] == [[100], [101]]
    return handle


def served(decode: list[NamespacedWorker]) -> list[tuple[str, str | None]]:
    """(decode worker's namespace, the namespace its transfer parameters came from) per request decoded."""
    return [(w.namespace, (r.disaggregated_params or {}).get("namespace")) for w in decode for r in w.requests]


async def test_each_requests_prefill_and_decode_workers_share_a_namespace(plane):
    client, start = plane
    workers = [await start(ns, prefill) for ns in ("dyn-a1b2c3d4", "dyn-f5e6d7c8") for prefill in (False, True)]
    workers.append(await start("dyn-f5e6d7c8", False))  # the new set: 2 decode workers, the old one 1
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]  # nothing to tokenize
    entry.workers = {iid: info(iid, w) for iid, w in enumerate(workers, 1)}
    metrics = FrontendMetrics()
    d = dispatcher(client, metrics)
    for i in range(60):
        handle = await run(d, entry, f"r{i}")
        assert entry.workers[handle.worker_id].endpoint.namespace == \
            entry.workers[handle.prefill_worker_id].endpoint.namespace
    decode = [w for w in workers if not w.prefill]
    pairs = served(decode)
    assert len(pairs) == 60 and all(ns == origin for ns, origin in pairs), pairs
    per_set = {ns: sum(1 for n, _ in pairs if n == ns) for ns in ("dyn-a1b2c3d4", "dyn-f5e6d7c8")}
    assert per_set["dyn-a1b2c3d4"] >= 8 and per_set["dyn-f5e6d7c8"] >= 25, per_set  # ~1/3 and ~2/3
    assert all(w.requests for w in workers)  # every worker served some
    counted = {ns: metrics.registry.get_sample_value("dynamo_frontend_worker_set_requests_total",
                                                     {"model": "m", "namespace": ns}) for ns in per_set}
    assert counted == per_set
    report = health_report([entry], {})["worker_sets"]["m"]
    assert report == [{"namespace": "dyn-a1b2c3d4", "decode_workers": 1, "prefill_workers": 1},
                      {"namespace": "dyn-f5e6d7c8", "decode_workers": 2, "prefill_workers": 1}]


async def test_a_set_without_prefill_workers_prefills_on_its_decode_worker(plane):
    """While set a has both roles, set b (decode workers only so far) is drawn into by no request; one that is
    in set b all the same (pinned to its worker) prefills there, never on set a's prefill worker."""
    client, start = plane
    old_decode, old_prefill, new_decode = await start("a", False), await start("a", True), await start("b", False)
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {1: info(1, old_decode), 2: info(2, old_prefill), 3: info(3, new_decode)}
    d = dispatcher(client)
    for i in range(20):
        await run(d, entry, f"r{i}")
    assert not new_decode.requests and len(old_decode.requests) == 20
    for i in range(5):
        await run(d, entry, f"p{i}", RoutingHints(backend_instance_id=3))
    assert len(new_decode.requests) == 5
    assert all(r.disaggregated_params is None for r in new_decode.requests)  # prefilled locally in set b
    assert all(r.disaggregated_params["namespace"] == "a" for r in old_decode.requests)
    assert len(old_prefill.requests) == len(old_decode.requests)  # only set a's requests reached its prefill


async def test_a_request_whose_set_lost_its_decode_worker_moves_and_is_prefilled_again(plane):
    """Set a's only decode worker cannot be reached after set a's prefill worker prefilled the request: it moves
    to set b, whose prefill worker prefills it again, and set b's decode worker pulls from set b."""
    client, start = plane
    a_prefill, b_decode, b_prefill = await start("a", True), await start("b", False), await start("b", True)
    gone = NamespacedWorker("a", False)  # never started: its address refuses connections
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {1: info(1, gone, f"127.0.0.1:{free_port()}"), 2: info(2, a_prefill), 3: info(3, b_decode),
                     4: info(4, b_prefill)}
    d = dispatcher(client)
    for i in range(12):
        await run(d, entry, f"r{i}")
    assert a_prefill.requests, "no request was placed in set a first"
    assert len(b_decode.requests) == 12 and all(r.disaggregated_params["namespace"] == "b"
                                                for r in b_decode.requests)
    assert len(b_prefill.requests) == 12  # those that started in set a were prefilled again in b


async def test_a_retry_stays_in_its_set_while_the_set_has_a_decode_worker(plane):
    """Set a's first decode worker cannot be reached: the requests placed in set a go to set a's other decode
    worker with set a's transfer parameters, none to set b."""
    client, start = plane
    a_decode, a_prefill, b_decode, b_prefill = (await start("a", False), await start("a", True),
                                                await start("b", False), await start("b", True))
    gone = NamespacedWorker("a", False)  # never started: its address refuses connections
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {1: info(1, gone, f"127.0.0.1:{free_port()}"), 2: info(2, a_decode), 3: info(3, a_prefill),
                     4: info(4, b_decode), 5: info(5, b_prefill)}
    d = dispatcher(client)
    for i in range(16):
        await run(d, entry, f"r{i}")
    assert a_prefill.requests and b_prefill.requests
    assert len(a_decode.requests) == len(a_prefill.requests) and len(b_decode.requests) == len(b_prefill.requests)
    assert all(ns == origin for ns, origin in served([a_decode, b_decode]))


async def test_a_draining_set_gets_no_new_requests(plane):
    """The old set's decode worker answered `draining` (inhibited): every request is placed in the new set and
    prefilled and decoded there; before, the inhibitor failed open over the old worker once the new set was
    excluded."""
    client, start = plane
    workers = [await start(ns, prefill) for ns in ("old", "new") for prefill in (False, True)]
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {iid: info(iid, w) for iid, w in enumerate(workers, 1)}
    inhibitor = Inhibitor(60.0)
    inhibitor.inhibit(1, ErrorCode.DRAINING)  # the old set's only decode worker
    d = dispatcher(client, inhibitor=inhibitor)
    for i in range(10):
        await run(d, entry, f"r{i}")
    old_decode, old_prefill, new_decode, new_prefill = workers
    assert not old_decode.requests and not old_prefill.requests
    assert len(new_decode.requests) == 10 and len(new_prefill.requests) == 10


async def test_with_enforce_disagg_a_set_without_prefill_workers_gets_no_requests(plane):
    """The new set's decode workers came up before its prefill workers: no request is drawn into it (a 503 each
    under --enforce-disagg)."""
    client, start = plane
    a_decode, a_prefill, b_decode = await start("a", False), await start("a", True), await start("b", False)
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {1: info(1, a_decode), 2: info(2, a_prefill), 3: info(3, b_decode)}
    d = dispatcher(client, disagg=DisaggPolicy(enforce=True))
    for i in range(10):
        await run(d, entry, f"r{i}")
    assert len(a_decode.requests) == 10 and not b_decode.requests


class Leaky(RoundRobinPolicy):
    """Gives the first `leaks` decode requests a worker they may not go to, as the KV router's queue gives a
    queued request a worker that joined another set while it waited."""

    def __init__(self, leaks: int) -> None:
        super().__init__()
        self.leaks, self.freed = leaks, []

    async def select(self, pool, request, exclude):
        outside = [w for w in pool.workers if w.instance_id in exclude]
        if pool.role is Role.DECODE and self.leaks and outside:
            self.leaks -= 1
            return Choice(outside[0])
        return await super().select(pool, request, exclude)

    def free(self, request_id: str, output_tokens: int = 0) -> None:
        self.freed.append(request_id)
        super().free(request_id, output_tokens)


async def test_a_worker_of_another_set_given_after_a_wait_is_freed_and_routed_again(plane):
    client, start = plane
    workers = [await start(ns, prefill) for ns in ("a", "b") for prefill in (False, True)]
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {iid: info(iid, w) for iid, w in enumerate(workers, 1)}
    policy = Leaky(1)
    d = dispatcher(client, policy=policy)
    handle = await run(d, entry, "r0")
    assert entry.workers[handle.worker_id].endpoint.namespace == entry.workers[handle.prefill_worker_id].endpoint.namespace
    assert policy.leaks == 0 and policy.freed.count("r0") == 2  # the stray booking, then the request's own
    assert all(ns == origin for ns, origin in served([workers[0], workers[2]]))


async def test_a_request_given_other_sets_workers_again_and_again_finds_no_worker(plane):
    client, start = plane
    workers = [await start(ns, False) for ns in ("a", "b")]
    entry = ModelEntry("m", None, card(WorkerType.DECODE))  # type: ignore[arg-type]
    entry.workers = {iid: info(iid, w) for iid, w in enumerate(workers, 1)}
    d = dispatcher(client, policy=Leaky(100))
    with pytest.raises(ApiError) as raised:
        await run(d, entry, "r0")
    assert raised.value.status == 503 and d.policy.freed.count("r0") == STRAY_RETRIES + 1
    assert not any(w.requests for w in workers)


async def test_a_rollout_that_starts_between_a_prefill_and_its_decode_keeps_the_decode_in_the_prefills_set(plane):
    """The model had one set when the request was placed; a second set's workers came while it was prefilled: its
    decode worker is of the set its transfer parameters are for, never of the new one."""
    client, start = plane
    a_decode, a_prefill = await start("a", False), await start("a", True)
    b_decode, b_prefill = await start("b", False), await start("b", True)
    entry = ModelEntry("m", None, card(WorkerType.DECODE))
    entry.workers = {1: info(1, a_decode), 2: info(2, a_prefill)}
    d = dispatcher(client)
    prefill = d.prefill.prefill

    async def prefill_then_roll_out(*args, **kwargs):
        params = await prefill(*args, **kwargs)
        if 0 not in entry.workers:  # set b comes up while the first request is prefilled in set a
            entry.workers = {**entry.workers, 0: info(0, b_decode), 4: info(4, b_prefill)}
            entry.version += 1
        return params

    d.prefill.prefill = prefill_then_roll_out  # the orchestrator's own code runs; only the moment is chosen
    for i in range(6):
        await run(d, entry, f"r{i}")
    pairs = served([a_decode, b_decode])
    assert pairs and all(ns == origin for ns, origin in pairs), pairs
