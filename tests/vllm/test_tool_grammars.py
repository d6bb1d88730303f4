"""The constraints the frontend asks for with tools (frontend/tool_guidance.py) against the xgrammar and
vLLM of the vLLM venv, without an engine (seconds): tool_choice required over tools whose parameters use
`$defs`, or refs into their own schema (a recursive tree), compiles and holds each call to its own tool's
schema; tool_choice auto with a response_format compiles (through `dynamo.vllm.handler.structured_outputs`
and vLLM's own check, the tag given as an object or as JSON text) into a grammar that admits the answer in
its schema or the calls in each tool-call format (JSON calls, calls headed by their name, parameters in
xgrammar's XML styles, typed by each tool's schema: the model's own text, which our parser reads back), after
the reasoning of a model that reasons first and a little layout whitespace, and nothing else, matched as
text and as the tokens of a tokenizer that holds the formats' markers as special tokens (one token each, as
the models' own tokenizers have them); and vLLM's offline engine held to it (tiny random model) writes calls
as well as answers."""

from __future__ import annotations

import json

import pytest

from dynamo.frontend.parsers import make_tool_parser
from tests.frontend import test_tool_guidance as guidance
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
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.tool_guidance import ReasoningStart
from dynamo.llm.protocol import GuidedDecodingOptions
from dynamo.vllm.handler import structured_outputs

case = json.loads(os.environ["CASE"])
tok = AutoTokenizer.from_pretrained("tests/fixtures/tiny-model")
tok.add_special_tokens({"additional_special_tokens": case["markers"]})
info = xgr.TokenizerInfo.from_huggingface(tok)
compiler = xgr.GrammarCompiler(info)

def chat(tools=None, **over):
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools or case["tools"], **over}
    return decode_request(json.dumps(body).encode(), "chat")

def admits(compiled, text):  # `text` whole, as text and as its tokens (a marker one token); a string if they differ
    m = xgr.GrammarMatcher(compiled)
    as_text = m.accept_string(text) and m.accept_token(info.stop_token_ids[0])
    m = xgr.GrammarMatcher(compiled)
    ids = tok.encode(text, add_special_tokens=False) + info.stop_token_ids[:1]
    as_tokens = all(m.accept_token(i) for i in ids)
    return as_text if as_text == as_tokens else f"as text {as_text}, as tokens {as_tokens}"

def auto(fmt, reasoning=None, as_text=False, tools=None, response_format=None):
    guided = chat(tools, tool_choice="auto", response_format=response_format or case["format"]).guided_decoding(
        True, fmt or None, reasoning)
    if as_text:  # Dynamo's wire may carry the tag as JSON text: passed on as it is
        guided = GuidedDecodingOptions(structural_tag=json.dumps(guided.structural_tag))
    params = structured_outputs(guided)
    validate_xgrammar_grammar(SamplingParams(structured_outputs=params))  # vLLM's own check of a request
    return compiler.compile_structural_tag(params.structural_tag)

out = {"markers": [m for m in case["markers"] if len(tok.encode(m, add_special_tokens=False)) != 1]}
required = compiler.compile_json_schema(json.dumps(chat(tool_choice="required").guided_decoding(True).json))
out["required"] = [admits(required, t) for t in case["required"]]
named = chat(tool_choice={"type": "function", "function": {"name": "tree"}}).guided_decoding(True).json
out["named"] = [admits(compiler.compile_json_schema(json.dumps(named)), t) for t in case["named"]]
for fmt, texts in case["auto"].items():
    out[fmt] = [admits(auto(fmt, as_text=fmt == "hermes"), t) for t in texts]
out["reasoning"] = {f"{p}/{w}": [admits(auto("hermes", ReasoningStart(p, PromptReasoning(w))), t) for t in texts]
                    for p, w, texts in case["reasoning"]}
out["headed"] = []
for headed in case.get("headed", []):  # other tools and answer: per format (`mistral_list`: Mistral's other form)
    out["headed"].append({})
    for fmt, texts in headed["texts"].items():
        compiled = auto(fmt.replace("_list", ""), tools=headed["tools"], response_format=headed["format"])
        out["headed"][-1][fmt] = [admits(compiled, t) for t in texts]
print(json.dumps(out))
"""

ADDRESS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
ZIP = {"type": "object", "properties": {"zip": {"type": "integer"}}, "required": ["zip"]}
TOOLS = [{"type": "function", "function": {"name": "ship", "parameters": {
             "$defs": {"Address": ADDRESS}, "type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}},
             "required": ["to"]}}},
         {"type": "function", "function": {"name": "bill", "parameters": {
             "$defs": {"Address": ZIP}, "type": "object", "properties": {"to": {"$ref": "#/$defs/Address"}},
             "required": ["to"]}}},
         # Recursive, draft-07: refs to its own root and to a sibling property (no `$defs` to point into).
         {"type": "function", "function": {"name": "tree", "parameters": {
             "definitions": {"Leaf": ZIP}, "type": "object", "properties": {
                 "leaf": {"$ref": "#/definitions/Leaf"}, "kids": {"type": "array", "items": {"$ref": "#"}},
                 "twin": {"$ref": "#/properties/leaf"}}, "required": ["leaf"]}}}]
FORMAT = {"type": "json_schema", "json_schema": {"name": "R", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}
SHIP = '{"name": "ship", "arguments": {"to": {"city": "Oslo"}}}'
BILL = '{"name": "bill", "arguments": {"to": {"zip": 1}}}'
WRONG = '{"name": "ship", "arguments": {"to": {"zip": 1}}}'  # bill's Address under ship's name
TREE = '{"name": "tree", "arguments": {"leaf": {"zip": 1}, "kids": [{"leaf": {"zip": 2}, "twin": {"zip": 3}}]}}'
BAD_TREE = '{"name": "tree", "arguments": {"leaf": {"zip": 1}, "kids": [{"leaf": {"city": "Oslo"}}]}}'
# Per format: the answer, two calls as the model writes them, text that is neither, a call against its schema.
AUTO = {
    "hermes": [f"<tool_call>\n{SHIP}\n</tool_call>\n<tool_call>\n{BILL}\n</tool_call>\n<tool_call>\n{TREE}\n</tool_call>",
               f"<tool_call>\n{BAD_TREE}\n</tool_call>"],
    "nemotron_deci": [f"<TOOLCALL>[{SHIP}, {BILL}]</TOOLCALL>", f"<TOOLCALL>[{WRONG}]</TOOLCALL>"],
    "jamba": [f"<tool_calls>[{SHIP}, {BILL}]</tool_calls>", f"<tool_calls>[{WRONG}]</tool_calls>"],
    "phi4": [f"functools[{SHIP}, {BILL}]", f"functools[{WRONG}]"],
    "llama3_json": [t.replace('"arguments"', '"parameters"') for t in (f"{SHIP}; {BILL}", WRONG)],
    "": [f"<TOOLCALL>[{SHIP}]</TOOLCALL>", f"<TOOLCALL>[{WRONG}]</TOOLCALL>"],  # no parser: Dynamo's default
}


ANSWER, CALL = '{"answer": "sunny"}', f"<tool_call>\n{SHIP}\n</tool_call>"
# Per reasoning parser and where the prompt left the reasoning: texts, then whether each is admitted.
REASONING = [
    ("qwen3", "unknown", [f"<think>\nSunny? {{ <tool_call>\n</think>\n\n{ANSWER}", f"<think>Check.</think>\n\n{CALL}",
                          ANSWER, CALL, "<think>Hm.</think>\n\nIt is sunny.", "Hm.</think>" + ANSWER, "It is sunny."],
     [True, True, True, True, False, False, False]),
    ("qwen3", "opened", ["Check.</think>\n\n" + CALL, f"Hm.</think>{ANSWER}", ANSWER, "Hm.</think>It is sunny."],
     [True, True, True, False]),
    ("deepseek_r1", "unknown", ["Check.</think>\n\n" + CALL, "<think>Hm.</think>" + ANSWER, "Hm.</think>Sunny."],
     [True, True, False]),
    # Layout ahead of the answer or the calls: a few characters, never a model's whole output.
    ("qwen3", "closed", [ANSWER, CALL, "<think>Hm.</think>" + ANSWER, "\n\n" + CALL, " \n" + ANSWER,
                         "\n" * 9 + ANSWER], [True, True, False, True, True, False]),
]
# Each format's markers, special tokens of the models' tokenizers (added to the tiny one: one token each).
MARKERS = ["<tool_call>", "</tool_call>", "<think>", "</think>", "<TOOLCALL>", "</TOOLCALL>", "<|python_tag|>",
           "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",
           "<|tool_calls_section_begin|>", "<|tool_calls_section_end|>", "<|tool_call_begin|>",
           "<|tool_call_argument_begin|>", "<|tool_call_end|>", "[TOOL_CALLS]", "[ARGS]", "<minimax:tool_call>",
           "</minimax:tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "｜DSML｜"]


def test_tool_constraints_compile_and_admit_exactly_the_calls_or_the_answer(vllm_python, tmp_path):
    listed = [t.replace('"arguments"', '"parameters"') for t in (f"[{SHIP}, {BILL}]", f"[{WRONG}]", f"[{TREE}]",
                                                                  f"[{BAD_TREE}]")]
    auto = {fmt: [ANSWER, calls, wrong, "It is sunny."] for fmt, (calls, wrong) in AUTO.items()}
    reasoning = [[parser, where, texts] for parser, where, texts, _ in REASONING]
    named = [json.dumps(json.loads(t)["arguments"]) for t in (TREE, BAD_TREE)]  # the tree's own root: as written
    case = {"tools": TOOLS, "format": FORMAT, "required": listed, "named": named, "auto": auto, "reasoning": reasoning,
            "markers": MARKERS}
    got = run(vllm_python, CHECK, tmp_path, {"CASE": json.dumps(case)})
    assert got.pop("markers") == [] and got.pop("headed") == []  # each marker one token
    assert got.pop("required") == [True, False, True, False] and got.pop("named") == [True, False]
    assert got.pop("reasoning") == {f"{parser}/{where}": expected for parser, where, _, expected in REASONING}
    assert got == {fmt: [True, True, False, False] for fmt in AUTO}


def headed_texts(good: str) -> list[str]:
    """The model's own calls (tests/frontend/test_tool_guidance.py's, which our parser reads back), a call to a
    function not offered, a call against its tool's schema (an argument it does not have), the answer, text."""
    return [good, good.replace("get_weather", "get_tide"), good.replace("zone", "zones"), '{"city": "Oslo"}',
            "It is sunny."]


def test_formats_naming_calls_in_text_admit_the_models_own_calls_or_the_answer(vllm_python, tmp_path):
    """DeepSeek, Kimi, Mistral (both forms) and the tagged-parameter formats (Qwen3-Coder, GLM, MiniMax M2,
    DSML): the tag admits the model's text that our parser reads back as the calls, and holds it to the
    offered names and their schemas (parameters in xgrammar's XML styles included: each value of the kind its
    schema says, as tests/frontend/test_tool_guidance.py's parser reads it back), after the layout the models
    write ahead of their calls (DeepSeek V3.2/V4 `\n\n`, GLM-4.5 `\n`, Mistral's `[TOOL_CALLS] [`)."""
    answer = '{"city": "Oslo"}'
    texts = {fmt: headed_texts(good) for fmt, good in guidance.HEADED.items()}
    # Text where the schema says integer, a JSON string where Optional[int]: not what the schema admits.
    wrong = [[(k, "three" if k == "count" else v, s) for k, v, s in guidance.TYPED_VALUES],
             [(k, '"5"' if k == "limit" else v, s) for k, v, s in guidance.TYPED_VALUES]]
    typed = {fmt: [guidance.tagged_call(fmt, values) for values in [guidance.TYPED_VALUES, *wrong]] + [answer]
             for fmt in guidance.TAGGED}
    spaced = {fmt: [text, "\n" + answer, "\n" * 9 + text] for fmt, text in guidance.SPACED.items()}  # 9: too many
    groups = [(guidance.TOOLS, texts), (guidance.PLAN_TOOLS, typed), (guidance.TOOLS, spaced)]
    case = {"tools": TOOLS, "format": FORMAT, "required": [], "named": [], "auto": {}, "reasoning": [],
            "markers": MARKERS,
            "headed": [{"tools": tools, "format": guidance.FORMAT, "texts": t} for tools, t in groups]}
    got = run(vllm_python, CHECK, tmp_path, {"CASE": json.dumps(case)})["headed"]
    assert got == [{fmt: [True, False, False, True, False] for fmt in texts},
                   {fmt: [True, False, False, True] for fmt in typed}, {fmt: [True, True, False] for fmt in spaced}]


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
        else:  # after a few characters of layout, at most
            assert text.lstrip().startswith("{") and len(text) - len(text.lstrip()) <= 8, text
            if finish == "stop":
                assert isinstance(json.loads(text)["ok"], bool), text
    assert calls > 0
