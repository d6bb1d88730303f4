"""Our `guided_decoding` (`protocol.GuidedDecodingOptions`, Dynamo's structured output) in the forms the
engines without vLLM's one-to-one fields take: SGLang's sampling params (`json_schema` as a string,
`regex`, `ebnf`, `structural_tag`) and TensorRT-LLM's `GuidedDecodingParams` fields (`json`, `json_object`,
`regex`, `grammar`). Neither has `choice`: it becomes an EBNF grammar of its alternatives (xgrammar's syntax, which
both engines' default grammar backend reads)."""

from __future__ import annotations

import functools
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
        text = engine_structural_tag(guided.structural_tag)
        return {"structural_tag": text} if text is not None else {}
    return {}


def engine_structural_tag(tag: Any) -> str | None:
    """The structural tag as the JSON text vLLM and SGLang take; None (send no constraint, logged once) when
    it asks for tool parameters written as tags (xgrammar's json_schema `style`) and the xgrammar installed
    beside the engine predates `style`: an older one would either refuse it (a 400 for a request otherwise
    served unconstrained) or ignore it and force JSON arguments into an XML call our parser cannot read."""
    parsed = tag
    if isinstance(tag, str):
        try:
            parsed = json.loads(tag)
        except ValueError:
            return tag  # not ours to judge: the engine answers it
    if _tagged_parameters(parsed) and not xgrammar_reads_styles():
        _skip_once("the installed xgrammar has no json_schema `style` (tool parameters written as tags, xgrammar "
                   ">= 0.2.8 checked): such structural tags are not sent; those requests run unconstrained")
        return None
    return structural_tag_text(tag)


def _tagged_parameters(tag: Any) -> bool:
    """Whether a structural tag asks for a json_schema format in a `style` other than "json"."""
    if isinstance(tag, dict):
        if tag.get("type") == "json_schema" and tag.get("style", "json") != "json":
            return True
        return any(_tagged_parameters(v) for v in tag.values())
    if isinstance(tag, list):
        return any(_tagged_parameters(v) for v in tag)
    return False


@functools.cache
def xgrammar_reads_styles() -> bool:
    """Whether this process's xgrammar (the engine's grammar backend) knows a json_schema format's `style`."""
    try:
        from xgrammar.structural_tag import JSONSchemaFormat
    except Exception:  # no xgrammar here, or one without the structural tag's format form
        return False
    return "style" in getattr(JSONSchemaFormat, "model_fields", {})


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
