"""Requests whose model switches its card while they wait in the router's queue, then are routed to a worker of
the new card (refused after routing), before anything of their answer was sent: prepared again and answered, not
refused. A unary request with n>1 whose one choice is refused after another already produced output (nothing of a
unary answer is sent before its last batch), and a `query_instance_id` whose routed worker is of the new card (its
answer would pair the old card's token ids with it). A real FrontendApp over the embedded discovery store and real
request-plane workers (`test_card_reprepare.Rollout`), with a routing policy that holds a request until the switch.
"""

from __future__ import annotations

import asyncio
import json

from dynamo.frontend.openai import decode_request
from dynamo.frontend.preparation import chat_text
from dynamo.router.policy import RoundRobinPolicy, Role
from tests.frontend.test_card_reprepare import WAIT, Rollout, post


class Held(RoundRobinPolicy):
    """Round robin, but the first attempt's second choice (`…-1`, not a retry's `….r1-1`) and the first routing
    query wait until `release`, then are routed over the model's workers as they are then (a queue that reads
    membership again)."""

    def __init__(self, entry) -> None:
        super().__init__()
        self.entry = entry
        self.release = asyncio.Event()
        self.waiting = asyncio.Event()
        self.outputs: list[str] = []
        self.queries = 0

    async def _held(self, pool):
        self.waiting.set()
        await asyncio.wait_for(self.release.wait(), WAIT)
        return self.entry.pool(Role.DECODE)

    async def select(self, pool, request, exclude):
        rid = request.request_id
        if rid.endswith("-1") and ".r1" not in rid:
            pool = await self._held(pool)
        return await super().select(pool, request, exclude)

    async def query(self, pool, request, exclude):
        self.queries += 1
        if self.queries == 1:
            pool = await self._held(pool)
        return await super().query(pool, request, exclude)

    def output(self, request_id: str) -> None:
        self.outputs.append(request_id)
        super().output(request_id)


async def wait_until(check, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.01)


async def switch(rollout: Rollout, policy: Held) -> None:
    """The new card's majority takes over; then the held request is routed: to a new card's worker."""
    await rollout.register(3, rollout.new_workers[1], block_size=32, chat_template=rollout.template)
    assert await rollout.manager.wait_for(lambda: rollout.entry.block_size == 32, WAIT), "the new card serves"
    policy.release.set()


async def test_a_unary_choice_refused_after_another_choice_produced_output_is_prepared_again(tmp_path, request):
    async with Rollout(f"reprepare-unary-{request.node.name}", tmp_path) as rollout:
        policy = rollout.app.dispatcher.policy = Held(rollout.entry)
        body = json.dumps({"model": "tiny", "max_tokens": 2, "n": 2,
                           "messages": [{"role": "user", "content": "hello"}]}).encode()
        answer = asyncio.ensure_future(post(rollout.app, body))
        await asyncio.wait_for(policy.waiting.wait(), WAIT)
        await wait_until(lambda: any(r.endswith("-0") for r in policy.outputs), "the first choice never produced")
        await switch(rollout, policy)
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        assert len(json.loads(text)["choices"]) == 2
        assert len(rollout.old_worker.requests) == 1  # the first attempt's first choice, whose output went nowhere
        sent = rollout.sent()
        assert len(sent) == 2 and all(".r1-" in r.request_id for r in sent)  # both choices prepared again
        assert rollout.sample("dynamo_frontend_model_card_reprepared_total") == 1
        assert rollout.sample("dynamo_frontend_request_duration_seconds_count") == 1


async def test_a_routing_query_routed_to_a_new_cards_worker_is_prepared_again(tmp_path, request):
    async with Rollout(f"reprepare-query-{request.node.name}", tmp_path) as rollout:
        policy = rollout.app.dispatcher.policy = Held(rollout.entry)
        body = json.dumps({"model": "tiny", "max_tokens": 2, "nvext": {"annotations": ["query_instance_id"]},
                           "messages": [{"role": "user", "content": "hello"}]}).encode()
        answer = asyncio.ensure_future(post(rollout.app, body))
        await asyncio.wait_for(policy.waiting.wait(), WAIT)
        await switch(rollout, policy)
        status, text = await asyncio.wait_for(answer, 60)
        assert status == 200, text
        nvext = json.loads(text)["nvext"]
        pipeline, req = rollout.entry.pipeline, decode_request(body, "chat")
        assert nvext["worker_id"]["decode_worker_id"] in (2, 3)
        assert nvext["token_ids"] == pipeline.encode_prompt(chat_text(pipeline, req), "messages")  # the new card's
        assert policy.queries == 2 and rollout.sample("dynamo_frontend_model_card_reprepared_total") == 1
