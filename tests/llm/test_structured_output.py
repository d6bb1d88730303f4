"""Our guided_decoding in SGLang's and TensorRT-LLM's forms (llm/structured_output.py)."""

from __future__ import annotations

import json

import pytest

from dynamo.llm.protocol import GuidedDecodingOptions as G
from dynamo.llm import structured_output
from dynamo.llm.structured_output import choice_grammar, sglang_params, structural_tag_text, trtllm_fields

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_each_constraint_in_sglangs_sampling_params():
    assert json.loads(sglang_params(G(json=SCHEMA))["json_schema"]) == SCHEMA
    assert json.loads(sglang_params(G(json_object=True))["json_schema"]) == {"type": "object"}
    assert sglang_params(G(regex="[0-9]+")) == {"regex": "[0-9]+"}
    assert sglang_params(G(grammar='root ::= "x"')) == {"ebnf": 'root ::= "x"'}
    assert sglang_params(G(choice=["yes", "no"])) == {"ebnf": 'root ::= "yes" | "no"'}
    assert sglang_params(None) == {} and sglang_params(G()) == {}


def test_each_constraint_in_trtllms_guided_decoding_fields():
    assert trtllm_fields(G(json=SCHEMA)) == {"json": SCHEMA}
    assert trtllm_fields(G(json_object=True)) == {"json_object": True}
    assert trtllm_fields(G(regex="a+")) == {"regex": "a+"}
    assert trtllm_fields(G(choice=["a b", 'say "hi"'])) == {"grammar": 'root ::= "a b" | "say \\"hi\\""'}
    assert trtllm_fields(None) == {} and trtllm_fields(G()) == {}


def test_a_choice_grammar_keeps_non_ascii_text_as_written():
    assert choice_grammar(["café", "日本"]) == 'root ::= "café" | "日本"'


def test_a_structural_tag_in_sglangs_form_and_left_out_of_trtllms():
    """tool_choice auto with a response_format (frontend/tool_guidance.py): SGLang's xgrammar backend takes the
    structural tag as JSON text; TensorRT-LLM's documented form cannot say it, so nothing is enforced there."""
    tag = {"type": "structural_tag", "format": {"type": "or", "elements": [
        {"type": "json_schema", "json_schema": SCHEMA}, {"type": "const_string", "value": "<tool_call>"}]}}
    assert json.loads(sglang_params(G(structural_tag=tag))["structural_tag"]) == tag
    assert trtllm_fields(G(structural_tag=tag)) == {}


def test_a_structural_tag_given_as_json_text_is_passed_on_as_it_is():
    """NVIDIA Dynamo's wire carries the tag as an object or as JSON text (1.6.1's serialize_structural_tag
    takes both): text is what the engines take already, never encoded a second time (vLLM's handler uses
    the same `structural_tag_text`)."""
    tag = {"type": "structural_tag", "format": {"type": "const_string", "value": "hi"}}
    text = json.dumps(tag)
    assert structural_tag_text(tag) == text and structural_tag_text(text) == text
    assert sglang_params(G(structural_tag=text)) == {"structural_tag": text}


XML_CALL = {"type": "tag", "begin": "<function=f>", "end": "</function>",
            "content": {"type": "json_schema", "json_schema": {"type": "object"}, "style": "qwen_xml"}}
XML_TAG = {"type": "structural_tag", "format": {"type": "or", "elements": [{"type": "json_schema", "json_schema": {}},
                                                                         XML_CALL]}}


@pytest.mark.parametrize("as_text", [False, True])  # Dynamo's wire carries a tag as an object or as its text
def test_tagged_parameters_are_not_sent_to_an_xgrammar_without_styles(monkeypatch, as_text):
    monkeypatch.setattr(structured_output, "xgrammar_reads_styles", lambda: False)
    tag = json.dumps(XML_TAG) if as_text else XML_TAG
    assert sglang_params(G(structural_tag=tag)) == {}
    assert structured_output.engine_structural_tag(tag) is None
    json_call = {**XML_CALL, "content": {"type": "json_schema", "json_schema": {"type": "object"}}}
    plain = {"type": "structural_tag", "format": json_call}  # JSON arguments: every xgrammar with the form reads it
    assert json.loads(sglang_params(G(structural_tag=plain))["structural_tag"]) == plain


def test_tagged_parameters_are_sent_to_an_xgrammar_with_styles(monkeypatch):
    monkeypatch.setattr(structured_output, "xgrammar_reads_styles", lambda: True)
    assert json.loads(sglang_params(G(structural_tag=XML_TAG))["structural_tag"]) == XML_TAG
    assert structured_output.engine_structural_tag("not json") == "not json"  # the engine's to answer
