"""`truncation: "auto"` (frontend/responses_truncation.py) as pure logic, over a stand-in tokenizer that
counts one token per character of content and refuses a prompt over the context as the pipeline does:
where cuts may fall, what a cut keeps, the slack it leaves, and when nothing is cut."""

from __future__ import annotations

import asyncio

import pytest

from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.openai import ChatCompletionRequest, ChatMessage
from dynamo.frontend.responses_truncation import SLACK, ConversationFit, cuts, shortened
from dynamo.llm.preprocessor import ContextOverflow

CONTEXT = 100


def m(role: str, size: int) -> ChatMessage:
    return ChatMessage(role=role, content="x" * size)


class Counting:
    """A tokenizer stand-in: one token per content character; a 400 with the overflow past the context."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, req: ChatCompletionRequest):
        self.calls += 1
        n = sum(len(msg.content or "") for msg in req.messages)
        if n >= CONTEXT:
            error = bad_request("too long", "messages", "context_length_exceeded")
            error.overflow = ContextOverflow(n, CONTEXT)
            raise error
        return [0] * n, b""


def fitted(messages: list[ChatMessage], max_tokens: int | None = None):
    tokenize, fit = Counting(), ConversationFit()
    req = ChatCompletionRequest(model="m", messages=messages, max_tokens=max_tokens)
    out, (ids, _) = asyncio.run(fit(tokenize, CONTEXT, req))
    return out.messages, len(ids), tokenize.calls, fit


def test_a_prompt_that_fits_is_tokenized_once_and_left_whole():
    messages = [m("system", 10), m("user", 30), m("assistant", 30), m("user", 10)]
    out, n, calls, fit = fitted(messages)
    assert out == messages and n == 80 and calls == 1 and fit.messages is None


def test_cuts_fall_before_user_turns_and_agent_steps_never_between_a_call_and_its_result():
    messages = [m("system", 1), m("user", 1), m("assistant", 1), m("tool", 1), m("assistant", 1), m("tool", 1),
                m("user", 1), m("assistant", 1)]
    assert cuts(messages) == [4, 6]  # not 1: it would drop the system message alone, which stays anyway
    kept = shortened(messages, 4)  # inside the agent loop: the question it answers stays
    assert [x.role for x in kept] == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert kept[1] is messages[1]
    assert [x.role for x in shortened(messages, 6)] == ["system", "user", "assistant"]


def test_a_cut_frees_the_slack_where_it_can_so_the_next_turns_fit_as_they_are():
    messages = [m("developer", 5)] + [m(r, 12) for _ in range(6) for r in ("user", "assistant")] + [m("user", 5)]
    out, n, _, fit = fitted(messages, max_tokens=10)  # 5 + 144 + 5 over 100
    assert n + 10 + int(CONTEXT * SLACK) <= CONTEXT
    assert n + 10 + int(CONTEXT * SLACK) + 24 > CONTEXT  # one more exchange would not leave the slack
    assert out[0] is messages[0] and out[1].role == "user" and fit.messages == out


def test_without_room_for_the_slack_the_cut_that_fits_at_all():
    messages = [m("user", 40), m("assistant", 40), m("user", 80)]
    out, n, _, _ = fitted(messages, max_tokens=10)  # 80 + 10 fits, not with 12 to spare
    assert [x.role for x in out] == ["user"] and n == 80


def test_no_cut_that_fits_is_the_refusal_it_would_have_been():
    with pytest.raises(ApiError) as err:
        fitted([m("user", 10), m("assistant", 10), m("user", 150)])
    assert err.value.overflow.prompt_tokens == 170
    # room for the answer: a prompt that fits alone but leaves none is passed on as it is, to be refused there
    out, n, _, fit = fitted([m("user", 95)], max_tokens=10)
    assert n == 95 and fit.messages is None


class Limited(Counting):
    """`Counting` for a model whose context is `context` (another card's: a rolling update changed it)."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.context = context

    async def __call__(self, req: ChatCompletionRequest):
        n = sum(len(msg.content or "") for msg in req.messages)
        if n >= self.context:
            error = bad_request("too long", "messages", "context_length_exceeded")
            error.overflow = ContextOverflow(n, self.context)
            raise error
        return [0] * n, b""


def test_a_request_prepared_again_is_fitted_afresh():
    """Prepared for a card with a small context it was cut; prepared again (its card switched to one with room for
    it all) it runs whole, and what the next turn goes on from is the whole conversation, not the earlier cut."""
    fit = ConversationFit()
    req = ChatCompletionRequest(model="m", messages=[m("system", 10), m("user", 40), m("assistant", 40),
                                                     m("user", 30)])
    cut, _ = asyncio.run(fit(Limited(CONTEXT), CONTEXT, req))
    assert len(cut.messages) < len(req.messages) and fit.messages == cut.messages
    whole, (ids, _) = asyncio.run(fit(Limited(10 * CONTEXT), 10 * CONTEXT, req))
    assert whole.messages == req.messages and len(ids) == 120
    assert fit.messages is None
