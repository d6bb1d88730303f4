"""The frontend's `Dispatcher` under worker deadlines, on real request-plane workers on
loopback: a worker that misses the first-output or idle deadline has its stream cancelled,
is inhibited, and the request migrates (within `--migration-limit`, continuing after the
tokens already generated) or ends in a 504 `worker_timeout` error, never a hang."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.frontend.config import FrontendConfig
from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.errors import ApiError
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.protocol import PreprocessedRequest, StopConditions
from dynamo.llm.worker_client import Deadlines
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy, WorkerInfo
from dynamo.runtime.config import parse_config
from dynamo.runtime.records import EndpointId
from dynamo.runtime.rp_client import RequestPlaneClient
from dynamo.runtime.wire import ErrorCode
from tests.fixtures.scripted_worker import ScriptedWorker

GENEROUS = 30.0
PROMPT = [1, 2, 3]


@pytest.fixture
async def deploy():
    """Starts scripted workers (instance ids 1, 2, ...: round-robin tries them in that order)
    behind a `Dispatcher`; stops them all afterwards."""
    workers: list[ScriptedWorker] = []
    client = RequestPlaneClient()

    async def deploy(*scripts: dict, migration_limit: int, deadlines: Deadlines):
        card = ModelDeploymentCard(display_name="m", slug="m", model_path="m", context_length=4096,
                                   kv_cache_block_size=16)
        entry = ModelEntry("m", None, card)  # type: ignore[arg-type]  # no pipeline: nothing to tokenize
        for iid, script in enumerate(scripts, 1):
            worker = ScriptedWorker(**script)
            await worker.server.start()
            workers.append(worker)
            entry.workers[iid] = WorkerInfo(iid, EndpointId("dynamo", "backend", "generate"), card, worker.address)
        metrics = FrontendMetrics()
        dispatcher = Dispatcher(client, RoundRobinPolicy(), migration_limit, metrics, None, Inhibitor(60), deadlines)
        return dispatcher, entry, workers

    yield deploy
    await client.close()
    for worker in workers:
        await worker.server.close(linger=0.1)


def request(max_tokens: int = 3) -> PreprocessedRequest:
    return PreprocessedRequest(request_id="r1", model="m", token_ids=PROMPT,
                               stop_conditions=StopConditions(max_tokens=max_tokens))


async def collect(dispatcher: Dispatcher, entry: ModelEntry) -> list[list[int]]:
    gen = dispatcher.stream(entry, request(), RequestHandle(), entry.card.mdcsum)
    return [out.token_ids async for batch in gen for out in batch]


def migrations(dispatcher: Dispatcher) -> float:
    return dispatcher.metrics.registry.get_sample_value(
        "dynamo_frontend_model_migration_total", {"model": "m", "migration_type": "ongoing_request"}) or 0.0


async def test_a_worker_silent_past_the_first_output_deadline_is_migrated_away_from(deploy):
    dispatcher, entry, (hung, good) = await deploy({"count": 0, "hang": True}, {"count": 3},
                                                   migration_limit=1, deadlines=Deadlines(first_output=0.5))
    assert await asyncio.wait_for(collect(dispatcher, entry), GENEROUS) == [[100], [101], [102]]
    await asyncio.wait_for(hung.cancelled.wait(), GENEROUS)  # the hung worker was told to stop
    assert good.requests[0].token_ids == PROMPT  # nothing generated before: the same prompt
    assert migrations(dispatcher) == 1
    assert dispatcher.inhibitor.counts[ErrorCode.TIMEOUT] == 1 and 1 in dispatcher.inhibitor.active()


async def test_an_idle_worker_mid_stream_is_continued_elsewhere(deploy):
    dispatcher, entry, (stalled, good) = await deploy({"count": 1, "hang": True}, {"count": 2},
                                                      migration_limit=1, deadlines=Deadlines(idle=0.5))
    assert await asyncio.wait_for(collect(dispatcher, entry), GENEROUS) == [[100], [100], [101]]
    await asyncio.wait_for(stalled.cancelled.wait(), GENEROUS)
    continued = good.requests[0]
    assert continued.token_ids == PROMPT + [100] and continued.stop_conditions.max_tokens == 2


async def test_without_migration_a_silent_worker_is_a_504_before_any_output(deploy):
    dispatcher, entry, (hung,) = await deploy({"count": 0, "hang": True}, migration_limit=0,
                                              deadlines=Deadlines(first_output=0.3))
    with pytest.raises(ApiError) as err:
        await asyncio.wait_for(collect(dispatcher, entry), GENEROUS)
    assert (err.value.status, err.value.code) == (504, "worker_timeout")
    assert "first-output deadline" in err.value.message
    await asyncio.wait_for(hung.cancelled.wait(), GENEROUS)


async def test_without_migration_an_idle_worker_ends_the_stream_with_the_error(deploy):
    dispatcher, entry, (stalled,) = await deploy({"count": 1, "hang": True}, migration_limit=0,
                                                 deadlines=Deadlines(idle=0.3))
    gen = dispatcher.stream(entry, request(), RequestHandle(), entry.card.mdcsum)
    first = await asyncio.wait_for(gen.__anext__(), GENEROUS)  # the output before the stall still arrives
    assert [out.token_ids for out in first] == [[100]]
    with pytest.raises(ApiError) as err:
        await asyncio.wait_for(gen.__anext__(), GENEROUS)
    assert (err.value.status, err.value.code) == (504, "worker_timeout") and "idle" in err.value.message
    await asyncio.wait_for(stalled.cancelled.wait(), GENEROUS)


async def test_no_deadline_by_default_waits_for_a_slow_first_output(deploy):
    dispatcher, entry, (slow,) = await deploy({"count": 1, "first_delay": 1.0}, migration_limit=0,
                                              deadlines=Deadlines())
    assert await asyncio.wait_for(collect(dispatcher, entry), GENEROUS) == [[100]]
    assert not slow.cancelled.is_set()


def test_deadlines_are_off_by_default_and_set_by_flag_or_env():
    default = parse_config(FrontendConfig, [], environ={})
    assert (default.first_token_timeout_secs, default.stream_idle_timeout_secs) == (None, None)
    config = parse_config(FrontendConfig, ["--first-token-timeout-secs", "30"],
                          environ={"DYN_STREAM_IDLE_TIMEOUT_SECS": "2.5", "DYN_FIRST_TOKEN_TIMEOUT_SECS": "9"})
    assert (config.first_token_timeout_secs, config.stream_idle_timeout_secs) == (30.0, 2.5)  # flag > env
    with pytest.raises(SystemExit):
        parse_config(FrontendConfig, ["--stream-idle-timeout-secs", "0"], environ={})
