"""A request prepared for one model card whose model switches to another card before it is dispatched is
prepared again for the new card (its tokens from the new card's template) and answered, not refused: a real
FrontendApp over the embedded discovery store and real request-plane workers; the switch is made while the
request's tokenization waits on the frontend's prep pool (a pool that holds its jobs until the test lets them go).
It is counted once in the request metrics, its retry goes out under its own wire id, and a client that left
meanwhile is not answered on the new card."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from dynamo.frontend.dispatch import Dispatcher
from dynamo.frontend.http_app import FrontendApp
from dynamo.frontend.metrics import FrontendMetrics
from dynamo.frontend.openai import decode_request
from dynamo.frontend.preparation import chat_text
from dynamo.llm.model_card import build_card
from dynamo.router.policy import RoundRobinPolicy
from tests.fixtures.scripted_worker import ScriptedWorker
from tests.frontend.helpers_inprocess import InProcessFrontend
from tests.frontend.test_model_manager import MODEL_DIR

WAIT = 30.0


class HeldPool(ThreadPoolExecutor):
    """The prep pool, holding each job until `release`; `arrived` is set once a job is handed to it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2, thread_name_prefix="held-prep")
        self.arrived, self.gate = threading.Event(), threading.Event()

    def submit(self, fn, /, *args, **kwargs):
        self.arrived.set()

        def held():
            if not self.gate.wait(WAIT):
                raise TimeoutError("the test never let the job go")
            return fn(*args, **kwargs)
        return super().submit(held)

    async def job_arrived(self) -> None:
        """Until a job was handed to the pool (polled: no thread, as this pool may be the loop's default executor)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while not self.arrived.is_set():
            assert asyncio.get_running_loop().time() < deadline, "the request's tokenization never reached the pool"
            await asyncio.sleep(0.01)


class Rollout(InProcessFrontend):
    """A model served by one block-16 worker and one block-32 worker (a tie: the old card stays), and a FrontendApp
    whose prep pool holds the jobs; `switch` brings the new card's second worker: its majority takes over at once."""

    def __init__(self, name: str, tmp_path, **card_kw) -> None:
        self.old_worker, self.new_workers = ScriptedWorker(count=2), [ScriptedWorker(count=2) for _ in range(2)]
        super().__init__(name, [self.old_worker, *self.new_workers])
        self.card_kw = card_kw
        self.template = tmp_path / "new.jinja"
        self.template.write_text("NEW CARD {% for m in messages %}{{ m['content'] }}{% endfor %}")
        self.metrics = FrontendMetrics()
        self.app = FrontendApp(self.manager, Dispatcher(self.client, RoundRobinPolicy(), 0, FrontendMetrics()),
                               self.metrics, body_limit=64 << 20, admin_api=False)
        self.app.prep_pool.shutdown()
        self.pool = self.app.prep_pool = HeldPool()

    async def setup(self) -> None:
        await self.register(1, self.old_worker, block_size=16)
        await self.register(2, self.new_workers[0], block_size=32, chat_template=self.template)
        held = lambda: [(c["workers"], c["ready"]) for c in self.manager.cards()["tiny"]["held_apart"]]  # noqa: E731
        assert await self.manager.wait_for(lambda: self.manager.listed() and held() == [(1, True)], WAIT)
        self.entry = self.manager.get("tiny")
        self.old_pipeline = self.entry.pipeline

    async def close(self) -> None:
        self.pool.gate.set()
        await super().close()

    async def register(self, iid: int, worker: ScriptedWorker, **card_kw) -> None:  # type: ignore[override]
        card = build_card(MODEL_DIR, name="tiny", context_length=1 << 20, **card_kw, **self.card_kw)
        await super().register(iid, worker, card)

    async def switched_while_prepared(self, request: asyncio.Future) -> None:
        """Once `request` waits on the pool, prepared for the old card, the new card's majority takes over."""
        await self.pool.job_arrived()
        await self.register(3, self.new_workers[1], block_size=32, chat_template=self.template)
        assert await self.manager.wait_for(lambda: self.entry.block_size == 32, WAIT), "the new card serves"
        assert not request.done()

    def sent(self) -> list:
        return [r for w in self.new_workers for r in w.requests]

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, {"model": "tiny", **labels}) or 0.0


def chat(stream: bool, **extra) -> bytes:
    """A body big enough to be tokenized on the prep pool."""
    return json.dumps({"model": "tiny", "max_tokens": 2, "stream": stream, **extra,
                       "messages": [{"role": "user", "content": "hello world " * 30_000}]}).encode()


async def post(app: FrontendApp, body: bytes, leave: asyncio.Event | None = None,
               path: str = "/v1/chat/completions") -> tuple[int | None, bytes]:
    """POST `body`; the client stays, or leaves once `leave` is set. (status, body); no status if none was sent."""
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        if chunks:
            return chunks.pop()
        await (leave or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_prepared_for_the_old_card_is_prepared_again_and_answered(tmp_path, request, stream):
    """Unary and streaming alike (a stream's headers go out with its first output, after the dispatch); counted
    once in the request metrics; its retry's wire id is told apart from the first attempt's."""
    async with Rollout(f"reprepare-{request.node.name}", tmp_path) as rollout:
        body = chat(stream)
        answer = asyncio.ensure_future(post(rollout.app, body))
        await rollout.switched_while_prepared(answer)
        rollout.pool.gate.set()
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        assert b"model_card_changed" not in text and (b"data: [DONE]" in text) == stream
        assert rollout.old_worker.requests == []
        (sent,) = rollout.sent()
        pipeline, req = rollout.entry.pipeline, decode_request(body, "chat")
        assert sent.token_ids == pipeline.encode_prompt(chat_text(pipeline, req), "messages")
        assert sent.token_ids != rollout.old_pipeline.encode_prompt(chat_text(rollout.old_pipeline, req), "messages")
        assert sent.request_id.endswith(".r1")
        first = text.split(b"\n\n")[0].removeprefix(b"data: ") if stream else text
        assert json.loads(first)["id"].endswith(sent.request_id.removesuffix(".r1")), first  # the request's id
        for histogram in ("request_duration_seconds", "input_sequence_tokens", "output_sequence_tokens"):
            assert rollout.sample(f"dynamo_frontend_{histogram}_count") == 1, histogram
        assert rollout.sample("dynamo_frontend_model_card_reprepared_total") == 1


async def test_every_choice_of_an_n_request_is_prepared_again(tmp_path, request):
    async with Rollout(f"reprepare-{request.node.name}", tmp_path) as rollout:
        answer = asyncio.ensure_future(post(rollout.app, chat(False, n=2)))
        await rollout.switched_while_prepared(answer)
        rollout.pool.gate.set()
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        assert len(json.loads(text)["choices"]) == 2 and rollout.old_worker.requests == []
        sent = rollout.sent()
        assert len(sent) == 2 and sent[0].token_ids == sent[1].token_ids
        assert rollout.sample("dynamo_frontend_request_duration_seconds_count") == 1


@pytest.mark.parametrize("n", [1, 2])
async def test_a_client_that_left_during_the_first_attempt_is_not_answered_on_the_new_card(tmp_path, request, n):
    """It left while its request was prepared for the old card: the card's switch ends it as cancelled, not
    prepared again and run for nobody (n=1: the refusal comes without a yield to the loop, before the client's
    watcher has run once; n=2: its choices' streams see the departure first)."""
    async with Rollout(f"reprepare-{request.node.name}", tmp_path) as rollout:
        leave = asyncio.Event()
        answer = asyncio.ensure_future(post(rollout.app, chat(False, n=n), leave))
        await rollout.switched_while_prepared(answer)
        leave.set()
        rollout.pool.gate.set()
        status, _ = await asyncio.wait_for(answer, 60)
        await asyncio.sleep(0.2)  # anything sent on would reach a worker by now
        assert rollout.sent() == [] and rollout.old_worker.requests == []
        assert status in (None, 503)  # nothing, or the retryable 503 a gone client never reads
        assert rollout.sample("dynamo_frontend_model_card_reprepared_total") == 0
        assert rollout.sample("dynamo_frontend_request_duration_seconds_count") == 1


async def test_a_routing_query_prepared_for_the_old_card_is_prepared_again(tmp_path, request):
    """`query_instance_id` opens no stream: its card is checked where it is answered, and it is answered with the
    new card's tokens and worker."""
    async with Rollout(f"reprepare-{request.node.name}", tmp_path) as rollout:
        body = chat(False, nvext={"annotations": ["query_instance_id"]})
        answer = asyncio.ensure_future(post(rollout.app, body))
        await rollout.switched_while_prepared(answer)
        rollout.pool.gate.set()
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        nvext = json.loads(text)["nvext"]
        pipeline, req = rollout.entry.pipeline, decode_request(body, "chat")
        assert nvext["token_ids"] == pipeline.encode_prompt(chat_text(pipeline, req), "messages")
        assert nvext["worker_id"]["decode_worker_id"] in (2, 3)
        assert rollout.sent() == [] and rollout.old_worker.requests == []  # a query generates nothing


async def test_a_pooling_request_tokenized_for_the_old_card_reaches_no_worker_of_the_new_one(tmp_path, request):
    """Embeddings (and the routes that pool: classify, rerank, score) take the card with the pipeline before their
    inputs are tokenized (off the loop, in a thread): a switch meanwhile is the retryable 503, never the old
    tokenizer's ids on the new card's workers."""
    async with Rollout(f"reprepare-{request.node.name}", tmp_path, model_type=["embedding"]) as rollout:
        threads = HeldPool()  # where large inputs are tokenized (asyncio.to_thread): the loop's default executor
        asyncio.get_running_loop().set_default_executor(threads)
        rollout.pool = threads
        try:
            body = json.dumps({"model": "tiny", "input": ["hello world " * 10_000]}).encode()
            answer = asyncio.ensure_future(post(rollout.app, body, path="/v1/embeddings"))
            await rollout.switched_while_prepared(answer)
            threads.gate.set()
            status, text = await asyncio.wait_for(answer, 60)
        finally:
            threads.gate.set()
            threads.shutdown(wait=False)
        assert (status, json.loads(text)["error"]["code"]) == (503, "model_card_changed")
        assert rollout.sent() == [] and rollout.old_worker.requests == []


async def test_a_request_for_an_unknown_model_adds_no_metric_series(tmp_path, request):
    """The re-preparation counter is labelled only when a re-preparation happens: any name a client sends must not
    grow the frontend's metrics."""
    async with Rollout(f"reprepare-{request.node.name}", tmp_path) as rollout:
        body = json.dumps({"model": "no-such-model", "max_tokens": 2,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        status, _ = await asyncio.wait_for(post(rollout.app, body), 60)
        assert status == 404
        names = {s.labels.get("model") for m in rollout.metrics.registry.collect() for s in m.samples}
        assert "no-such-model" not in names
