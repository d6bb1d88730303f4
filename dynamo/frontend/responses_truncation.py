"""The Responses API's `truncation: "auto"`: a conversation that no longer fits the model's context
loses its oldest turns, as OpenAI's API drops input items from the start of the conversation, instead
of being refused. An agent that runs long (the Agents SDK's `truncation="auto"`, a chat carried on
through `previous_response_id`) keeps working where it would otherwise stop at a 400.

A cut only ever falls before a user message, so the conversation left starts with a user turn: no
tool result is left without the call it answers, no answer without its question. The system and
developer messages before the cut are kept (they are the rules, not a turn). The cut kept is the
earliest that fits, found by bisection over the possible cuts (tokenizing the prompt a few times:
the tokenizer cache makes the repeated history cheap). When even the last user turn alone does not
fit, nothing is dropped and the request gets the usual 400."""

from __future__ import annotations

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import ChatMessage
from dynamo.frontend.responses_request import ResponsesRequest


async def fitting_drop(app, rreq: ResponsesRequest, history: list[ChatMessage], body_size: int) -> int:
    """How many leading messages of the conversation `rreq` runs (after `history`) to leave out so its
    prompt, and its `max_output_tokens` when given, fit the model's context: 0 when `truncation` is not
    "auto", when everything fits, when no cut fits, or when the request is refused for another reason
    (which the request path then answers with, inside its accounting)."""
    entry = app.models.get(rreq.model)
    if rreq.truncation != "auto" or entry is None or not entry.decode_workers():
        return 0  # a model without workers: refused (and counted) once, on the request path
    try:
        context = entry.pipeline.context_length
        if await _fits(app, rreq, history, 0, context, body_size):
            return 0
        conversation = rreq.conversation_messages(history)
        cuts = [i for i, m in enumerate(conversation) if i and m.role == "user"]
        lo, hi = 0, len(cuts)  # the earliest fitting cut is in cuts[lo:hi]; hi: none found yet
        while lo < hi:
            mid = (lo + hi) // 2
            if await _fits(app, rreq, history, cuts[mid], context, body_size):
                hi = mid
            else:
                lo = mid + 1
        return cuts[lo] if lo < len(cuts) else 0
    except ApiError:
        return 0


async def _fits(app, rreq: ResponsesRequest, history: list[ChatMessage], drop: int, context: int,
                body_size: int) -> bool:
    try:
        tokens = await app.prompt_tokens(rreq.to_chat(history, drop), body_size)
    except ApiError as exc:
        if exc.overflow is not None:  # tokenizing found the prompt alone over the context
            return False
        raise
    room = context - tokens
    return room > 0 and (rreq.max_output_tokens is None or rreq.max_output_tokens <= room)
