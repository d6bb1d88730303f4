"""Speculative next-turn prefill (`nvext.agent_hints.speculative_prefill: true`, as NVIDIA Dynamo
1.6.1 serves it on chat; here also on `/v1/responses`): once a turn has answered, its messages plus
that answer are how the client's next turn will begin. Rendered without a generation prompt,
tokenized and sent as a one-token request, that prefix warms the KV cache of the worker the router
picks for it (the session's, or the one holding the history) while the user reads or the agent's
tool runs, so the next turn prefills only what is new. It pays where the engine's cache does not
already hold the answer as the next prompt spells it: reasoning stripped from the history by the
template, or an answer whose text tokenizes differently than it was generated.

The warmup carries the answer's text and tool calls (Dynamo's carries the text only; an agent's
turn often ends in tool calls, which its next prompt repeats), and the turn's session and LoRA
adapter, so it lands where the next turn will. Best effort and bounded: none after a session's
final turn or a failed one; each lasts at most `WARMUP_TIMEOUT_SECS`; all are cancelled when the
frontend closes; a failure is logged and counted, never seen by a client.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from prometheus_client import Counter

from dynamo.frontend.dispatch import aclose_quietly
from dynamo.frontend.request_handle import RequestHandle
from dynamo.frontend.errors import CardChanged, bad_request
from dynamo.frontend.openai import ChatMessage, message_dict
from dynamo.llm.preprocessor import PreprocessError
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions

log = logging.getLogger(__name__)

WARMUP_TIMEOUT_SECS = 60.0  # longer than a one-token prefill ever takes; shorter than a turn waits for its user
PARAM = "nvext.agent_hints.speculative_prefill"


def wanted(nvext: dict[str, Any] | None) -> bool:
    """Whether a chat request asks for a warmup after it; a non-boolean is the client's 400."""
    agent = (nvext or {}).get("agent_hints")
    value = agent.get("speculative_prefill") if isinstance(agent, dict) else None
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{PARAM} must be a boolean, got {value!r}", PARAM, "invalid_type")
    return bool(value)


def chat_answer_history(answer: dict) -> list[ChatMessage]:
    """A chat answer as the client's next turn repeats it: its text and tool calls as one assistant
    message, its reasoning left out as clients and templates leave it out of the history."""
    calls = answer.get("tool_calls") or None
    return [ChatMessage(role="assistant", content=answer.get("content") or "", tool_calls=calls)]


def next_turn_messages(req, answer: list[ChatMessage]) -> list[dict]:
    """The conversation as the next turn will send it, in the template's form: the turn's messages
    and then its answer, both converted as the next turn's own messages will be (tool call arguments
    as objects, for one)."""
    return [*req.message_dicts(), *map(message_dict, answer)]


class SpeculativePrefill:
    """Owns the warmups in flight: started after a turn, each bounded, all cancelled at close."""

    def __init__(self, dispatcher, prep_pool, registry, prefix: str) -> None:
        self.dispatcher = dispatcher
        self.prep_pool = prep_pool
        self.outcomes = Counter(f"{prefix}_speculative_prefills", "Speculative next-turn prefills by outcome "
                                "(done, failed, timed_out, skipped: the prefix could not be rendered, card_changed: "
                                "the model's card switched before it was sent)", ("model", "outcome"),
                                registry=registry)
        self._tasks: set[asyncio.Task] = set()

    def start(self, entry, req, answer: list[ChatMessage], hints: RoutingHints | None) -> None:
        """Warm the next turn of `req`, whose answer the next turn repeats as the messages `answer`."""
        if hints is not None and hints.session_final:
            return  # the session is over: there is no next turn to warm
        # the card served now and its pipeline, taken together: the prefix is tokenized by that pipeline on the
        # prep pool, and only that card's workers take it (a switch meanwhile: `card_changed`, nothing sent)
        task = asyncio.get_running_loop().create_task(self._warm(entry, (entry.card.mdcsum, entry.pipeline), req,
                                                                 answer, hints), name="speculative-prefill")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _warm(self, entry, served: tuple[str, Any], req, answer: list[ChatMessage],
                    hints: RoutingHints | None) -> None:
        outcome = "done"
        card, pipeline = served
        try:
            async with asyncio.timeout(WARMUP_TIMEOUT_SECS):
                ids = await asyncio.get_running_loop().run_in_executor(self.prep_pool, self._prefix_ids, pipeline, req,
                                                                       answer)
                if ids is None:
                    outcome = "skipped"
                    return
                await self._send(entry, card, warmup_request(pipeline, ids, hints))
        except TimeoutError:
            outcome = "timed_out"
            log.warning("speculative prefill for %s took over %.0f s: abandoned", entry.name, WARMUP_TIMEOUT_SECS)
        except CardChanged:  # a rolling update's switch: the next turn is prepared for the new card anyway
            outcome = "card_changed"
            log.info("speculative prefill for %s dropped: its model's card switched", entry.name)
        except Exception as exc:  # best effort: the client already has its answer
            outcome = "failed"
            log.info("speculative prefill for %s failed: %s", entry.name, exc)
        finally:
            self.outcomes.labels(entry.name, outcome).inc()

    @staticmethod
    def _prefix_ids(pipeline, req, answer: list[ChatMessage]) -> list[int] | None:
        try:
            return pipeline.chat_prompt_ids(next_turn_messages(req, answer),
                                                  req.template_tools(), req.template_kwargs(),
                                                  generation_prompt=False)
        except PreprocessError as exc:  # e.g. the history with the answer no longer fits the context
            log.debug("speculative prefill skipped: %s", exc.message)
            return None

    async def _send(self, entry, card: str, request: PreprocessedRequest) -> None:
        """Drain the one-token answer, so the router's booking runs its whole course; a timeout or
        cancel stops the worker."""
        handle = RequestHandle()
        gen = self.dispatcher.stream(entry, request, handle, card)
        finished = False
        try:
            async for _ in gen:
                pass
            finished = True
        finally:
            if not finished:
                handle.cancel()
            await aclose_quietly(gen)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def warmup_request(pipeline, ids: list[int], hints: RoutingHints | None) -> PreprocessedRequest:
    """A one-token request for the prefix, routed as the turn was (its session, not its worker pin:
    the router finds where the history is cached) and never ordered ahead of real requests, in the
    turn's KV namespace (its cache salt), where the next turn will look for it."""
    routing = None
    if hints is not None and (hints.session_id is not None or hints.cache_salt):
        routing = RoutingHints(session_id=hints.session_id, parent_session_id=hints.parent_session_id,
                               session_control=hints.session_control, cache_salt=hints.cache_salt)
    return PreprocessedRequest(request_id=f"specprefill-{uuid.uuid4().hex}", model=pipeline.name, token_ids=ids,
                               stop_conditions=StopConditions(max_tokens=1), eos_token_ids=[],
                               routing=routing, lora_name=pipeline.card.lora_name)

