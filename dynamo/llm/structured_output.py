"""Our `guided_decoding` (`protocol.GuidedDecodingOptions`, Dynamo's structured output) in the forms the
engines without vLLM's one-to-one fields take: SGLang's sampling params (`json_schema` as a string,
`regex`, `ebnf`, `structural_tag`) and TensorRT-LLM's `GuidedDecodingParams` fields (`json`, `json_object`,
`regex`, `grammar`). Neither has `choice`: it becomes an EBNF grammar of its alternatives (xgrammar's syntax, which
both engines' default grammar backend reads)."""

from __future__ import annotations

import json
import logging
from typing import Any

from dynamo.llm.protocol import GuidedDecodingOptions

ANY_OBJECT = {"type": "object"}
log = logging.getLogger(__name__)


def choice_grammar(choices: list[str]) -> str:
    """An EBNF grammar whose language is exactly `choices` (each a double-quoted literal)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def structural_tag_text(tag: Any) -> str:
    """A structural tag as the JSON text vLLM and SGLang take: Dynamo's wire carries it as an object or as
    that text already (NVIDIA Dynamo 1.6.1 takes both), which is passed on as it is, not encoded twice."""
    return tag if isinstance(tag, str) else json.dumps(tag)


def sglang_params(guided: GuidedDecodingOptions | None) -> dict[str, Any]:
    """SGLang sampling params for the constraint ({} when none)."""
    if guided is None:
        return {}
    if guided.json is not None or guided.json_object:
        return {"json_schema": json.dumps(guided.json if guided.json is not None else ANY_OBJECT)}
    if guided.regex:
        return {"regex": guided.regex}
    if guided.choice:
        return {"ebnf": choice_grammar(guided.choice)}
    if guided.grammar:
        return {"ebnf": guided.grammar}
    if guided.structural_tag is not None:  # its xgrammar backend reads the structural tag format as vLLM does
        if _tagged_parameters(guided.structural_tag):
            _skip_once("a structural tag with XML-style tool parameters (xgrammar's json_schema `style`, not "
                       "verified with SGLang's pinned xgrammar, which could read them as JSON) is not sent to SGLang")
            return {}
        return {"structural_tag": structural_tag_text(guided.structural_tag)}
    return {}


def _tagged_parameters(tag: Any) -> bool:
    """Whether a structural tag asks for tool parameters written as tags (a json_schema format's `style` other
    than "json"): an xgrammar that predates `style` would ignore it and force JSON arguments into an XML call."""
    if isinstance(tag, dict):
        if tag.get("type") == "json_schema" and tag.get("style", "json") != "json":
            return True
        return any(_tagged_parameters(v) for v in tag.values())
    if isinstance(tag, list):
        return any(_tagged_parameters(v) for v in tag)
    return False


_skipped: set[str] = set()


def _skip_once(message: str) -> None:
    if message not in _skipped:
        _skipped.add(message)
        log.warning(message)


def trtllm_fields(guided: GuidedDecodingOptions | None) -> dict[str, Any]:
    """TensorRT-LLM `GuidedDecodingParams` fields for the constraint ({} when none)."""
    if guided is None:
        return {}
    if guided.json is not None:
        return {"json": guided.json}
    if guided.json_object:
        return {"json_object": True}
    if guided.regex:
        return {"regex": guided.regex}
    if guided.choice:
        return {"grammar": choice_grammar(guided.choice)}
    if guided.grammar:
        return {"grammar": guided.grammar}
    # A structural tag (tool_choice auto with a response_format) is left out: TensorRT-LLM documents xgrammar's
    # legacy form (`structures` and `triggers`), which cannot say "this answer or those calls" (not tried here:
    # no TensorRT-LLM on these machines). Nothing enforced is what the frontend does for a format no grammar
    # can say: calls stay possible, the answer is not held to the schema.
    return {}
