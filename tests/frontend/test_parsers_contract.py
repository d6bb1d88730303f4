"""The card contract: every parser name a worker may publish has a registered parser."""

from dynamo.frontend.parsers import REASONING_PARSERS, TOOL_PARSERS
from dynamo.llm.model_card import REASONING_PARSERS as CARD_REASONING
from dynamo.llm.model_card import TOOL_CALL_PARSERS as CARD_TOOLS
from dynamo.llm.model_card import check_parser_names

import pytest


def test_every_card_name_is_registered():
    assert set(CARD_TOOLS) <= set(TOOL_PARSERS)
    assert set(CARD_REASONING) <= set(REASONING_PARSERS)


def test_workers_refuse_unknown_names():
    check_parser_names("hermes", "deepseek-r1")
    with pytest.raises(ValueError, match="--dyn-tool-call-parser"):
        check_parser_names("nope", None)
    with pytest.raises(ValueError, match="--dyn-reasoning-parser"):
        check_parser_names(None, "nope")


def test_dynamos_newest_names_reasoning_falls_back_tools_refused():
    """A reasoning format not known here is parsed as `<think>` tags (Dynamo's own fallback); a tool-call
    format not known here stops the worker rather than leave an agent's calls unparsed."""
    check_parser_names(None, "gemma4")
    assert REASONING_PARSERS["kimi_k3"]().feed("<think>a</think>b") == ("a", "b")
    with pytest.raises(ValueError, match="--dyn-tool-call-parser"):
        check_parser_names("kimi_k3", None)
