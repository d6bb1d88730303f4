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
