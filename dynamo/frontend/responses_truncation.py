"""The Responses API's `truncation: "auto"`: a conversation that no longer fits the model's context
loses its oldest turns, as OpenAI's API drops input items from the start of the conversation, instead
of being refused. An agent that runs long (the Agents SDK's `truncation="auto"`, a conversation carried
on through `previous_response_id`) keeps working where it would otherwise stop at a 400.

It runs on the request path, once the request is admitted (inside its accounting and the concurrency
limit), on the model entry that serves it: the prompt is tokenized as it is, and only a prompt over the
context (or without room for `max_output_tokens`) is cut. Where a cut may fall:
- before a user message: everything before it goes;
- before an assistant message that follows tool results (the next step of an agent loop): the steps
  before it go, with their calls and results together, and the user message the loop answers stays.
So no tool result is ever left without its call, nor an answer without its question. System and
developer messages (the instructions among them) always stay: they are the rules, not a turn.

Cutting only just enough would move the cut at every later turn of a conversation at the limit, so
every turn would start with a prompt the engine has never seen (no prefix-cache reuse). A cut
therefore frees `SLACK` of the context beyond the answer's room where some cut can (the next turns
then fit as they are, and reuse the cache), else as much as it takes. The cut is found by bisection
over the possible ones: the prompt shrinks as the cut moves on. When no cut fits, the request gets
the 400 it would have without truncation. The conversation stored for a later `previous_response_id`
is the one that ran (`ConversationFit.messages`), so the next turn starts from it."""

from __future__ import annotations

from typing import Awaitable, Callable

import msgspec

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import ChatCompletionRequest, ChatMessage

# Roles a cut never drops.
KEPT_ROLES = ("system", "developer")
# The share of the context a cut frees beyond the answer's room, where some cut can.
SLACK = 0.125

Ids = tuple[list[int], bytes]  # a prompt's token ids and its annotation events, as `FrontendApp.prompt_ids`


def cuts(messages: list[ChatMessage]) -> list[int]:
    """Where a cut may fall (before user messages, and before assistant messages that follow tool
    results), in order, leaving out those that would drop nothing but kept messages."""
    out = []
    droppable = False  # whether a message before c is one a cut would drop
    for c in range(1, len(messages)):
        droppable = droppable or messages[c - 1].role not in KEPT_ROLES
        role = messages[c].role
        if droppable and (role == "user" or (role == "assistant" and messages[c - 1].role == "tool")):
            out.append(c)
    return out


def shortened(messages: list[ChatMessage], c: int) -> list[ChatMessage]:
    """`messages` cut before `c`: the kept roles before it stay, and when it falls inside an agent loop
    (before an assistant message), the user message the loop answers."""
    kept = [m for m in messages[:c] if m.role in KEPT_ROLES]
    if messages[c].role == "assistant":
        asked = next((m for m in reversed(messages[:c]) if m.role == "user"), None)
        if asked is not None:
            kept.append(asked)
    return kept + messages[c:]


class ConversationFit:
    """Fits one Responses request's chat to its model's context (`truncation: "auto"`): called by the
    request path in place of tokenizing (`FrontendApp.prompt_ids`), it answers the chat request that
    runs, its token ids and annotation events."""

    def __init__(self) -> None:
        self.messages: list[ChatMessage] | None = None  # the messages that ran, when a cut shortened them

    async def __call__(self, tokenize: Callable[[ChatCompletionRequest], Awaitable[Ids]], context: int,
                       req: ChatCompletionRequest) -> tuple[ChatCompletionRequest, Ids]:
        self.messages = None  # a request prepared again (its card switched) is fitted afresh: no earlier cut stands
        whole = await _tried(tokenize, req)
        if isinstance(whole, tuple) and _fits(whole[0], req, context, 0):
            return req, whole
        places = cuts(req.messages)
        tried: dict[int, ApiError | Ids] = {}

        async def at(i: int) -> ApiError | Ids:
            if i not in tried:
                tried[i] = await _tried(tokenize, msgspec.structs.replace(req, messages=shortened(req.messages,
                                                                                                  places[i])))
            return tried[i]

        for slack in (int(context * SLACK), 0):
            i = await _earliest(places, lambda i: at(i), req, context, slack)
            if i is not None:
                self.messages = shortened(req.messages, places[i])
                return msgspec.structs.replace(req, messages=self.messages), tried[i]  # type: ignore[return-value]
        if isinstance(whole, ApiError):
            raise whole
        return req, whole  # the request path refuses it, for want of room for max_tokens


async def _earliest(places: list[int], at: Callable[[int], Awaitable[ApiError | Ids]], req: ChatCompletionRequest,
                    context: int, slack: int) -> int | None:
    """The index in `places` of the earliest cut whose prompt fits with `slack` to spare; None if none does."""
    lo, hi = 0, len(places)
    while lo < hi:
        mid = (lo + hi) // 2
        result = await at(mid)
        if isinstance(result, tuple) and _fits(result[0], req, context, slack):
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < len(places) else None


async def _tried(tokenize: Callable[[ChatCompletionRequest], Awaitable[Ids]],
                 req: ChatCompletionRequest) -> ApiError | Ids:
    """The prompt's ids and events, or the refusal of a prompt alone over the context."""
    try:
        return await tokenize(req)
    except ApiError as exc:
        if exc.overflow is None:  # not a matter of length: a cut would not help
            raise
        return exc


def _fits(ids: list[int], req: ChatCompletionRequest, context: int, slack: int) -> bool:
    room = context - len(ids) - slack
    return room > 0 and (req.max_tokens is None or req.max_tokens <= room)
