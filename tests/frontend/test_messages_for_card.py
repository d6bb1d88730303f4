"""A Messages request's thinking budget depends on the card its model is served by (its reasoning parser's tags in
its tokenizer): decided each time the request is prepared (`MessagesRun.for_card`), so one prepared again after a
rolling update's card switch gets the new card's decision, and the request it was decoded as is left as it was."""

from __future__ import annotations

import msgspec

from dynamo.frontend.anthropic import decode_messages
from dynamo.frontend.messages_run import MessagesRun
from dynamo.frontend.model_entry import ModelEntry
from dynamo.llm.model_card import RuntimeConfig, build_card
from dynamo.llm.preprocessor import ModelPipeline
from tests.frontend.test_model_manager import MODEL_DIR


def entry_of(**card_kw) -> ModelEntry:
    card = build_card(MODEL_DIR, name="tiny", block_size=16, **card_kw)
    return ModelEntry("tiny", ModelPipeline(card), card)


def test_the_thinking_budget_is_decided_for_the_card_each_preparation_is_for():
    mreq = decode_messages(msgspec.json.encode({
        "model": "tiny", "max_tokens": 10, "thinking": {"type": "enabled", "budget_tokens": 7},
        "messages": [{"role": "user", "content": "hi"}]}))
    req = mreq.to_chat(False)
    reasoning, plain = entry_of(runtime_config=RuntimeConfig(reasoning_parser="qwen3")), entry_of()
    assert reasoning.think_markers is not None and plain.think_markers is None
    first = MessagesRun.for_card(req, reasoning, messages_req=mreq)
    assert first.nvext["max_thinking_tokens"] == 7
    again = MessagesRun.for_card(req, plain, messages_req=mreq)  # prepared again for a card without reasoning
    assert not (again.nvext or {}).get("max_thinking_tokens")
    assert not (req.nvext or {}).get("max_thinking_tokens")  # the decoded request is not changed under it
