"""A batched completion run through a real FrontendApp and real request-plane workers (in process, scripted): each
prompt's requests reach the workers with that prompt's own tokens, under the flat wire ids of one response; one
prompt's worker failing fails the whole response, as a failed choice of `n > 1` does (a 5xx before any output, an
error event once streaming); a client that leaves stops every prompt's worker stream; a migrated choice goes on from
its own prompt; a card switch while the batch is tokenized prepares every prompt again under the retry's wire ids."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.http_app import FrontendApp
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.llm.model_card import build_card
from dynamo.llm.protocol import LLMEngineOutput
from dynamo.llm.worker_client import NO_DEADLINES, Deadlines
from dynamo.router.inhibit import Inhibitor
from dynamo.router.policy import RoundRobinPolicy
from tests.fixtures.scripted_worker import ScriptedWorker
from tests.frontend.helpers_inprocess import InProcessFrontend
from tests.frontend.test_card_reprepare import Rollout, post
from tests.frontend.test_model_manager import MODEL_DIR

WAIT = 30.0
FAILING = [13, 13, 13]  # the prompt the failing worker refuses
STALLING = [14, 14]  # the prompt on which a worker goes silent


class FailingWorker(ScriptedWorker):
    """A scripted worker that reports a cache hit of all but a prompt's last token, whose handler fails on the
    FAILING prompt and goes silent on the STALLING one (after a first token, so a stream is under way)."""

    cancels = 0  # streams of this worker its caller cancelled

    async def generate(self, request, ctx):
        if request.token_ids == STALLING:
            self.requests.append(request)
            yield LLMEngineOutput(token_ids=[100])
            await asyncio.Event().wait()
        if request.token_ids != FAILING:
            try:
                async for out in super().generate(request, ctx):
                    out.cached_tokens = len(request.token_ids) - 1  # all but its last token: a cache hit per prompt
                    yield out
            except asyncio.CancelledError:
                self.cancels += 1
                raise
            return
        self.requests.append(request)
        yield LLMEngineOutput(token_ids=[100])
        await asyncio.sleep(0.05)
        raise RuntimeError("the engine died")


class Served(InProcessFrontend):
    """Model "tiny" on two scripted workers (round robin) behind a FrontendApp."""

    def __init__(self, name: str, migration_limit: int = 0, deadlines: Deadlines = NO_DEADLINES, **worker_kw) -> None:
        super().__init__(name, [FailingWorker(**worker_kw) for _ in range(2)])
        dispatcher = Dispatcher(self.client, RoundRobinPolicy(), migration_limit, FrontendMetrics(), None,
                                Inhibitor(60), deadlines)
        self.app = FrontendApp(self.manager, dispatcher, FrontendMetrics(), body_limit=1 << 20, admin_api=False)

    async def setup(self) -> None:
        card = build_card(MODEL_DIR, name="tiny", context_length=4096, block_size=16)
        for iid, worker in enumerate(self.workers, 1):
            await self.register(iid, worker, card)
        entry = lambda: self.manager.get("tiny")  # noqa: E731
        assert await self.manager.wait_for(lambda: entry() is not None and len(entry().workers) == 2, WAIT)

    def sent(self) -> list:
        return sorted((r for w in self.workers for r in w.requests), key=lambda r: r.request_id)


def body(prompt, **extra) -> bytes:
    return json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 3, **extra}).encode()


async def test_each_prompt_reaches_a_worker_with_its_own_tokens(request):
    async with Served(f"batch-{request.node.name}") as served:
        status, text = await asyncio.wait_for(post(served.app, body([[11, 12], [21, 22, 23]], n=2, temperature=1),
                                                    path="/v1/completions"), WAIT)
        assert status == 200, text
        answer = json.loads(text)
        assert [c["index"] for c in answer["choices"]] == [0, 1, 2, 3]
        usage = answer["usage"]
        assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 12, 17)
        assert usage["prompt_tokens_details"] == {"cached_tokens": 1 + 2}  # each prompt's once, whatever its n
        sent = served.sent()
        assert [r.token_ids for r in sent] == [[11, 12], [11, 12], [21, 22, 23], [21, 22, 23]]
        assert [r.request_id for r in sent] == [f"{answer['id']}-{k}" for k in range(4)]
        assert all(w.requests for w in served.workers)  # routed one by one: round robin spread them
        metric = served.app.metrics.registry.get_sample_value
        assert metric("dynamo_frontend_input_sequence_tokens_sum", {"model": "tiny"}) == 5  # every prompt's, once
        assert metric("dynamo_frontend_cached_tokens_sum", {"model": "tiny"}) == 3


async def test_a_migrated_choice_goes_on_from_its_own_prompt(request):
    """A prompt's worker going silent mid-stream: its choice moves to the other worker with its own prompt's
    tokens and what it generated, under its own wire id."""
    async with Served(f"batch-{request.node.name}", migration_limit=1, deadlines=Deadlines(idle=0.5)) as served:
        status, text = await asyncio.wait_for(post(served.app, body([[11, 12], STALLING, [21]]),
                                                   path="/v1/completions"), WAIT)
        assert status == 200, text
        answer = json.loads(text)
        assert [c["finish_reason"] for c in answer["choices"]] == ["length"] * 3
        moved = [r for r in served.sent() if r.token_ids[:len(STALLING)] == STALLING]
        assert sorted(r.token_ids for r in moved) == [STALLING, STALLING + [100]]
        assert {r.request_id for r in moved} == {f"{answer['id']}-1"}


@pytest.mark.parametrize("stream", [False, True])
async def test_one_prompts_worker_failing_fails_the_response(request, stream):
    async with Served(f"batch-{request.node.name}", count=50, gap=0.01) as served:
        status, text = await asyncio.wait_for(post(served.app, body([[11, 12], FAILING], max_tokens=50,
                                                                    stream=stream), path="/v1/completions"), WAIT)
        if stream:
            assert status == 200 and b'"error"' in text and text.rstrip().endswith(b"data: [DONE]"), text
            assert b'"finish_reason":"length"' not in text  # the other prompt's answer was cut short too
        else:
            assert status >= 500 and b'"choices"' not in text, text


async def test_a_batch_prepared_for_the_old_card_is_prepared_again(tmp_path, request):
    """A card switch while the batch is tokenized (on the prep pool: its text is too big for the loop): every
    prompt is prepared again for the new card, under the retry's wire ids, and answered under the request's id."""
    async with Rollout(f"batch-{request.node.name}", tmp_path) as rollout:
        prompts = [f"prompt {i}: " + "hello world " * 1000 for i in range(2)]
        answer = asyncio.ensure_future(post(rollout.app, body(prompts, max_tokens=2), path="/v1/completions"))
        await rollout.switched_while_prepared(answer)
        rollout.pool.gate.set()
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        rid = json.loads(text)["id"]
        sent = sorted(rollout.sent(), key=lambda r: r.request_id)
        assert [r.request_id for r in sent] == [f"{rid}.r1-0", f"{rid}.r1-1"] and rollout.old_worker.requests == []
        assert [r.token_ids for r in sent] == [rollout.entry.pipeline.completion_prompt_ids(p) for p in prompts]
        assert rollout.sample("dynamo_frontend_model_card_reprepared_total") == 1
        assert rollout.sample("dynamo_frontend_request_duration_seconds_count") == 1


async def test_a_client_that_leaves_stops_every_prompt(request):
    async with Served(f"batch-{request.node.name}", count=1000, gap=0.02) as served:
        leave = asyncio.Event()
        answer = asyncio.ensure_future(post(served.app, body([[11], [21], [31]], stream=True, max_tokens=2000),
                                            leave, path="/v1/completions"))
        await asyncio.wait_for(_all_started(served, 3), WAIT)
        leave.set()
        await asyncio.wait_for(answer, WAIT)
        await asyncio.wait_for(_cancelled(served, 3), WAIT)  # every prompt's worker stream, long before its end


async def _all_started(served: Served, count: int) -> None:
    while len(served.sent()) < count:
        await asyncio.sleep(0.01)


async def _cancelled(served: Served, count: int) -> None:
    while sum(w.cancels for w in served.workers) < count:
        await asyncio.sleep(0.01)
