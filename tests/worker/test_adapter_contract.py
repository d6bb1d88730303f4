"""The engine-adapter contract, one suite for every engine: each adapter, driven by the
harness's own `RequestHandler` and KV sink, must stream token deltas with one final finish
reason, free the engine's request when the client goes away, report KV events that hash
like the router's, round-trip disaggregated params from its prefill role to its decode
role, reject bad requests as `bad_request`, honour the request limit, and report load; an engine
that schedules by priority (vLLM here) runs a waiting request with a higher agent-hint priority first.

Engines: mocker (real), sglang and trtllm (adapters over STAND-INS of their engines'
documented async interfaces, `standins.py`), vllm (real AsyncLLM, run in the vLLM venv by
tests/vllm/test_adapter_contract.py with DYN_ADAPTER_SUITE_ENGINES=vllm).
"""

from __future__ import annotations

import asyncio
import os

import pytest
import pytest_asyncio

from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions
from dynamo.llm.kv_events.hashing import block_hashes
from dynamo.llm.kv_events.protocol import KvStored
from dynamo.runtime.rp_server import HandlerError
from dynamo.worker.role import WorkerRole
from tests.worker.subjects import ENGINES, INSTANCE_ID, ORDERS_BY_PRIORITY, ROLES, Subjects

# The real vLLM engine (run by tests/vllm/test_adapter_contract.py) starts an engine-core process.
pytestmark = [pytest.mark.asyncio(loop_scope="module")] + ([pytest.mark.e2e] if "vllm" in ENGINES else [])

DISAGG_ENGINES = [e for e in ENGINES if WorkerRole.PREFILL in ROLES[e]]
PRIORITY_ENGINES = [e for e in ENGINES if e in ORDERS_BY_PRIORITY]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def subjects(tiny_model):
    subjects = Subjects(os.environ.get("DYN_ADAPTER_SUITE_MODEL") or str(tiny_model))
    yield subjects
    await subjects.close()


def request(rid: str, prompt: list[int], max_tokens: int, **kw) -> PreprocessedRequest:
    return PreprocessedRequest(request_id=rid, model="m", token_ids=prompt, eos_token_ids=[2],
                               stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True), **kw)


async def collect(handler, req):
    return [out async for out in handler.generate(req, None)]


async def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("engine", ENGINES)
async def test_streams_deltas_with_one_final_finish_reason(subjects, engine):
    subject = await subjects.get(engine)
    outs = await collect(subject.handler(), request(f"{engine}-s", list(range(3, 15)), 6))
    assert sum(len(o.token_ids) for o in outs) == 6
    assert [o.finish_reason for o in outs[:-1]] == [None] * (len(outs) - 1)
    assert outs[-1].finish_reason == "length"
    assert outs[0].cached_tokens is not None and all(o.error is None for o in outs)


@pytest.mark.parametrize("engine", ENGINES)
async def test_client_going_away_frees_the_engine_request(subjects, engine):
    subject = await subjects.get(engine)
    handler = subject.handler()
    aborted_before = subject.aborted() if subject.aborted else 0
    stream = handler.generate(request(f"{engine}-c", list(range(20, 30)), 200), None)
    first = await stream.__anext__()
    assert first.finish_reason is None
    await wait_for(lambda: subject.held() == 1, "the engine to hold the request")
    await stream.aclose()  # what a request-plane Cancel does to the handler
    await wait_for(lambda: subject.held() == 0, "the engine to free the request")
    assert handler.inflight == 0
    if subject.aborted:
        assert subject.aborted() == aborted_before + 1


@pytest.mark.parametrize("engine", ENGINES)
async def test_kv_events_hash_like_the_router(subjects, engine):
    subject = await subjects.get(engine)
    prompt = [7 + i for i in range(4 * subject.block_size + 1)]
    await collect(subject.handler(), request(f"{engine}-kv", prompt, 2))
    want = set(block_hashes(prompt, subject.block_size))

    def stored() -> set[int]:
        return {b.tokens_hash for e in subject.kv if isinstance(e.data, KvStored) for b in e.data.blocks}

    await wait_for(lambda: want <= stored(), "KvStored events for the prompt's full blocks", timeout=30)


if DISAGG_ENGINES:  # vLLM's roles need a KV connector: covered end to end by tests/vllm/test_disagg_{nixl,tcp}.py
    @pytest.mark.parametrize("engine", DISAGG_ENGINES)
    async def test_prefill_params_round_trip_to_decode(subjects, engine):
        prefill = await subjects.get(engine, WorkerRole.PREFILL)
        decode = await subjects.get(engine, WorkerRole.DECODE)
        prompt = list(range(40, 57))
        outs = await collect(prefill.handler(), request(f"{engine}-p", prompt, 8, prefill_only=True))
        params = outs[-1].disaggregated_params
        assert outs[-1].finish_reason is not None and isinstance(params, dict) and params
        outs = await collect(decode.handler(), request(f"{engine}-d", prompt, 5, disaggregated_params=params))
        assert sum(len(o.token_ids) for o in outs) == 5 and outs[-1].finish_reason == "length"
        if decode.check_decode_params:
            decode.check_decode_params(params)


@pytest.mark.parametrize("engine", ENGINES)
async def test_prompt_beyond_the_context_is_a_bad_request(subjects, engine):
    subject = await subjects.get(engine)
    with pytest.raises(HandlerError) as err:
        await collect(subject.handler(), request(f"{engine}-long", [5] * (subject.context + 8), 4))
    assert err.value.code == "bad_request"
    await wait_for(lambda: subject.held() == 0, "nothing held after the rejection")


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_reasoning_budget_is_enforced_or_refused_never_ignored(subjects, engine):
    """nvext.max_thinking_tokens: vLLM takes it only with a reasoning config (none here), SGLang's and
    TRT-LLM's APIs not at all: a bad request, refused whether the adapter refuses while building the
    request or while streaming it, and the handler's slot comes back. The mocker writes no reasoning,
    so any budget holds: it serves the request."""
    subject = await subjects.get(engine)
    handler = subject.handler()
    req = request(f"{engine}-think", [5, 6, 7], 2)
    req.stop_conditions.max_thinking_tokens = 8
    if engine == "mocker":
        assert (await collect(handler, req))[-1].finish_reason is not None
    else:
        with pytest.raises(HandlerError) as err:
            await collect(handler, req)
        assert err.value.code == "bad_request" and "think" in str(err.value)
    assert handler.inflight == 0
    await wait_for(lambda: subject.held() == 0, "nothing held after it")


@pytest.mark.parametrize("engine", ENGINES)
async def test_request_limit_refuses_as_overloaded(subjects, engine):
    subject = await subjects.get(engine)
    handler = subject.handler(limit=1)
    first = handler.generate(request(f"{engine}-o1", list(range(60, 70)), 200), None)
    await first.__anext__()
    with pytest.raises(HandlerError) as err:
        await collect(handler, request(f"{engine}-o2", [1, 2, 3], 2))
    assert err.value.code == "overloaded"
    await first.aclose()
    await wait_for(lambda: subject.held() == 0, "the first request freed")


@pytest.mark.parametrize("engine", ENGINES)
async def test_load_metrics_name_the_worker(subjects, engine):
    subject = await subjects.get(engine)
    load = subject.adapter.load_metrics(INSTANCE_ID)
    assert load.worker_id == INSTANCE_ID and load.request_total_slots > 0
    assert all(callable(fn) for _, _, fn in subject.adapter.gauges())


if PRIORITY_ENGINES:  # the real vLLM engine (tests/vllm/test_adapter_contract.py); no empty parametrize
    @pytest.mark.parametrize("engine", PRIORITY_ENGINES)
    async def test_agent_priority_orders_the_engines_waiting_queue(subjects, engine):
        """One request runs; a plain one queues, then an urgent one (higher agent-hint priority) queues
        behind it. When the running one ends, the urgent one must run first: FCFS would run the plain one."""
        subject = await subjects.get(engine)
        handler = subject.handler()
        busy = handler.generate(request(f"{engine}-busy", list(range(80, 90)), 400), None)
        await busy.__anext__()
        started: list[str] = []

        async def run(name: str, prompt: list[int], hints: RoutingHints | None = None) -> None:
            async for out in handler.generate(request(f"{engine}-{name}", prompt, 2, routing=hints), None):
                if out.token_ids and name not in started:
                    started.append(name)

        plain = asyncio.create_task(run("plain", [11, 12, 13]))
        await wait_for(lambda: subject.held() == 2, "the plain request queued")
        urgent = asyncio.create_task(run("urgent", [14, 15, 16], RoutingHints(priority=5)))
        await wait_for(lambda: subject.held() == 3, "the urgent request queued")
        await busy.aclose()  # frees the one running slot
        await asyncio.wait_for(asyncio.gather(plain, urgent), 120)
        assert started == ["urgent", "plain"]
