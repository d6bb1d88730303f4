"""The constraints the frontend asks for with tools (frontend/tool_guidance.py) against the xgrammar and
vLLM of the vLLM venv, without an engine (seconds): tool_choice required over tools whose parameters use
`$defs` compiles and holds each call to its own tool's definitions; tool_choice auto with a
response_format compiles (through `dynamo.vllm.handler.structured_outputs` and vLLM's own check) into a
grammar that admits the answer in its schema or the calls in each tool-call format, and nothing else; and
vLLM's offline engine held to it (tiny random model) writes calls as well as answers."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.parsers import make_tool_parser
from tests.vllm.conftest import BLOCK_SIZE, MAX_MODEL_LEN, reference_result, start_offline
from tests.vllm.test_vllm_objects import run

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

CHECK = """
import json, os
import xgrammar as xgr
from transformers import AutoTokenizer
from vllm.sampling_params import SamplingParams
from vllm.v1.structured_output.backend_xgrammar import validate_xgrammar_grammar
from dynamo.frontend.openai import decode_request
from dynamo.llm.protocol import GuidedDecodingOptions
from dynamo.vllm.handler import structured_outputs

tok = AutoTokenizer.from_pretrained("tests/fixtures/tiny-model")
info = xgr.TokenizerInfo.from_huggingface(tok)
compiler = xgr.GrammarCompiler(info)
case = json.loads(os.environ["CASE"])

def chat(**over):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": case["tools"], **over}
    return decode_request(json.dumps(body).encode(), "chat")

def admits(compiled, text):
    m = xgr.GrammarMatcher(compiled)
    return m.accept_string(text) and m.accept_token(info.stop_token_ids[0])

out = {}
required = compiler.compile_json_schema(json.dumps(chat(tool_choice="required").guided_decoding(True).json))
out["required"] = [admits(required, t) for t in case["required"]]
for fmt, texts in case["auto"].items():
    guided = chat(tool_choice="auto", response_format=case["format"]).guided_decoding(True, fmt or None)
    params = structured_outputs(guided)
    validate_xgrammar_grammar(SamplingParams(structured_outputs=params))  # vLLM's own check of a request
    compiled = compiler.compile_structural_tag(params.structural_tag)
    out[fmt] = [admits(compiled, t) for t in texts]
print(json.dumps(out))
"""

ADDRESS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ZIP = {"type": "object", "properties": {"zip": {"type": "integer"}}, "required": ["zip"]}
TOOLS = [{"type": "function", "function": {"name": "ship", "parameters": {
             "$defs": {"Address": ADDRESS}, "type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}},
             "required": ["to"]}}},
         {"type": "function", "function": {"name": "bill", "parameters": {
             "$defs": {"Address": ZIP}, "type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}},
             "required": ["to"]}}}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "R", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
SHIP = '{"name": "ship", "arguments": {"to": {"city": "Oslo"}}}'
BILL = '{"name": "bill", "arguments": {"to": {"zip": 1}}}'
WRONG = '{"name": "ship", "arguments": {"to": {"zip": 1}}}'  # bill's Address under ship's name
# Per format: the answer, two calls as the model writes them, text that is neither, a call against its schema.
AUTO = {
    "hermes": [f"<tool_call>\n{SHIP}\n</tool_call>\n<tool_call>\n{BILL}\n</tool_call>",
               f"<tool_call>\n{WRONG}\n</tool_call>"],
    "nemotron_deci": [f"<TOOLCALL>[{SHIP}, {BILL}]</TOOLCALL>", f"<TOOLCALL>[{WRONG}]</TOOLCALL>"],
    "jamba": [f"<tool_calls>[{SHIP}, {BILL}]</tool_calls>", f"<tool_calls>[{WRONG}]</tool_calls>"],
    "phi4": [f"functools[{SHIP}, {BILL}]", f"functools[{WRONG}]"],
    "llama3_json": [t.replace('"arguments"', '"parameters"') for t in (f"{SHIP}; {BILL}", WRONG)],
    "": [f"<TOOLCALL>[{SHIP}]</TOOLCALL>", f"<TOOLCALL>[{WRONG}]</TOOLCALL>"],  # no parser: Dynamo's default
}


def test_tool_constraints_compile_and_admit_exactly_the_calls_or_the_answer(vllm_python, tmp_path):
    listed = [t.replace('"arguments"', '"parameters"') for t in (f"[{SHIP}, {BILL}]", f"[{WRONG}]")]
    auto = {fmt: ['{"answer": "sunny"}', calls, wrong, "It is sunny."] for fmt, (calls, wrong) in AUTO.items()}
    case = {"tools": TOOLS, "format": FORMAT, "required": listed, "auto": auto}
    got = run(vllm_python, CHECK, tmp_path, {"CASE": json.dumps(case)})
    assert got.pop("required") == [True, False]
    assert got == {fmt: [True, True, False, False] for fmt in AUTO}


def test_a_vllm_engine_held_to_it_can_call_a_tool_or_answer_in_the_schema(vllm_python, vllm_model, tmp_path):
    """vLLM's engine (tiny random model, 64 seeds) under tools + tool_choice auto + a response_format: each
    sample is hermes calls the parser reads (of the offered function) or the answer's JSON, and calls do
    happen (held to the schema alone, as before, none could). The random model's JSON may run out of tokens,
    so only a finished sample is checked whole."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}, "required": ["city"]}}}]
    answer = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    request = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools,
               "response_format": {"type": "json_schema", "json_schema": {"name": "R", "schema": answer}}}
    proc = start_offline(vllm_python, "offline_tool_constraint.py", [
        str(vllm_model), json.dumps(request), "64", "40", str(BLOCK_SIZE), str(MAX_MODEL_LEN)], tmp_path / "run.log")
    calls = 0
    for text, finish in reference_result(proc):
        parser = make_tool_parser("hermes", tools)
        content, deltas = parser.feed(text)
        more, rest = parser.finish()
        names = [d.name for d in deltas + rest if d.name]
        if names:
            calls += 1
            assert set(names) == {"get_weather"} and not (content + more).strip(), text
        else:
            assert text.startswith("{"), text
            if finish == "stop":
                assert isinstance(json.loads(text)["ok"], bool), text
    assert calls > 0
