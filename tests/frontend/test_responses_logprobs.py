"""Token logprobs on a Responses answer's text (frontend/responses_logprobs.py, and the request that asks
for them, frontend/responses_request.py): which entries are the text's, both shapes the official openai SDK's
types hold them to (the output_text part's with `bytes`, the text events' without), and `top_logprobs`
refused outside [0, 20] as OpenAI refuses it."""

from __future__ import annotations

import json
import typing
from functools import partial
from types import SimpleNamespace

import msgspec
import openai.types.responses as sdk
import pytest

from dynamo.frontend.choices import Choice, HeldCalls, chat_choice, collect
from dynamo.frontend.errors import ApiError
from dynamo.frontend.logprob_json import ChatLogprobs
from dynamo.frontend.output import ChoiceDelta, OutputSpec, OutputStage, is_json
from dynamo.frontend.parsers import ToolCallDelta
from dynamo.frontend.responses_events import OutputEvents, answer_items
from dynamo.frontend.responses_logprobs import TextLogprobs
from dynamo.frontend.responses_request import decode_responses
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput
from tests.fixtures.sdk_types import check_event, check_output_item, sse_events

RENDER = ChatLogprobs(lambda token_id: f"t{token_id}").content
# Synthetic tokens' bytes, by id (a `t<id>` name where not listed): 8 and 9 are the halves of "é".
BYTES = {1: b"<think>", 2: b"Plan.", 3: b"</think>", 4: b"Hi", 5: b" th", 6: b"ere", 7: b"<tool_call>",
         8: b"\xc3", 9: b"\xa9", 10: b"\n\n", 11: b"Let me ", 12: b"check."}


def decode(ids: list[int]) -> str:
    return b"".join(BYTES.get(i, f"t{i}".encode()) for i in ids).decode("utf-8", "replace")


def wire(obj):
    """`obj` as a client reads it: encoded as the frontend encodes its answers (msgspec), then decoded."""
    return msgspec.json.decode(msgspec.json.encode(obj))


def entries(*ids: int, top: int = 0) -> list:
    return [(i, -0.1 * i, tuple((i + k, -0.1 * i - k) for k in range(top))) for i in ids]


def kept(deltas: list[ChoiceDelta]) -> list[list[int]]:
    route = TextLogprobs(decode)
    return [[e[0] for e in route.take(d).logprobs] for d in deltas]


def test_only_the_texts_tokens_keep_their_entries():
    deltas = [ChoiceDelta("", "", logprobs=entries(1)),  # `<think>`: shows nothing yet
              ChoiceDelta("", "Plan.", logprobs=entries(2)),
              ChoiceDelta(logprobs=entries(3)),  # `</think>`, closing the reasoning: not text
              ChoiceDelta("Hi", logprobs=entries(4)),
              ChoiceDelta(logprobs=entries(5)),  # held text (a stop string's prefix): the next text's
              ChoiceDelta(" there", logprobs=entries(6)),
              ChoiceDelta("", "", [ToolCallDelta(0, "c", "f", "{}")], logprobs=entries(7))]
    assert kept(deltas) == [[], [], [], [4], [], [5, 6], []]


def test_text_after_nothing_keeps_the_held_tokens():
    assert kept([ChoiceDelta(logprobs=entries(1)), ChoiceDelta("a", logprobs=entries(2))]) == [[], [1, 2]]


def test_held_text_after_reasoning_is_the_texts_as_far_as_it_became_it():
    """Half a UTF-8 character held after `</think>` and the blank line: the character's two tokens are the
    text's, the markup's are not."""
    deltas = [ChoiceDelta("", "Plan.", logprobs=entries(2)), ChoiceDelta(logprobs=entries(3)),
              ChoiceDelta(logprobs=entries(10)), ChoiceDelta(logprobs=entries(8)), ChoiceDelta("é", logprobs=entries(9))]
    assert kept(deltas) == [[], [], [], [], [8, 9]]


def test_one_output_with_reasoning_and_text_gives_the_text_its_last_tokens():
    assert kept([ChoiceDelta("Hi", "Plan.", logprobs=entries(1, 2, 3, 4))]) == [[4]]
    # Text, then a call begun in the same output: the first tokens are the text's.
    call = ToolCallDelta(0, "c", "f", "")
    assert kept([ChoiceDelta("Let me check.", "", [call], logprobs=entries(11, 12, 7))]) == [[11, 12]]


@pytest.fixture(scope="module")
def pipeline(tiny_model):
    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16))


def routed_stage(pipeline, spec: OutputSpec) -> tuple[OutputStage, TextLogprobs]:
    """An output stage routing its outputs' logprob entries as a Responses run with logprobs has it."""
    stage = OutputStage(pipeline, spec)
    route = TextLogprobs(partial(pipeline.tokenizer.decode, skip_special_tokens=False), stage.tools is not None)
    stage.logprob_route = route.take
    return stage, route


def folded(stage: OutputStage, outputs: list[LLMEngineOutput], per_batch: int) -> list[ChoiceDelta]:
    """The deltas of a fan-in's batches of `per_batch` outputs, folded as `GenerationRun._absorb` folds them."""
    deltas = []
    for k in range(0, len(outputs), per_batch):
        total = ChoiceDelta()
        for d in (stage.add(out, True) for out in outputs[k:k + per_batch]):
            total.content, total.reasoning = total.content + d.content, total.reasoning + d.reasoning
            total.tool_calls += d.tool_calls
            total.logprobs += d.logprobs
        deltas.append(total)
    return deltas + [stage.finish()]


def one_token_outputs(pipeline, text: str) -> list[LLMEngineOutput]:
    return [LLMEngineOutput(token_ids=[t], log_probs=[-0.5]) for t in pipeline.tokenizer.encode(text)]


def token_text(pipeline, deltas: list[ChoiceDelta]) -> str:
    return pipeline.tokenizer.decode([e[0] for d in deltas for e in d.logprobs], skip_special_tokens=False)


@pytest.mark.parametrize("per_batch", [1, 4, 8, 100])
def test_several_outputs_in_one_batch_keep_only_the_texts_entries(pipeline, per_batch):
    stage, _ = routed_stage(pipeline, OutputSpec([], reasoning_parser="qwen3"))
    outputs = one_token_outputs(pipeline, "<think>The user wants Paris weather.</think>It is sunny.")
    deltas = folded(stage, outputs, per_batch)
    assert "".join(d.content for d in deltas) == token_text(pipeline, deltas) == "It is sunny."


def test_one_output_of_reasoning_and_text_keeps_the_texts_last_tokens(pipeline):
    stage, _ = routed_stage(pipeline, OutputSpec([], reasoning_parser="qwen3"))
    ids = pipeline.tokenizer.encode("<think>Plan.</think>It is sunny.")
    deltas = [stage.add(LLMEngineOutput(token_ids=ids, log_probs=[-0.5] * len(ids)), True), stage.finish()]
    assert token_text(pipeline, deltas) == "It is sunny."


TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
CUT_CALL = 'Hi. <tool_call>\n{"name": "f", "arguments": {"a": '  # arguments that never become JSON


def test_a_call_that_never_became_json_is_answered_with_its_written_tokens_entries(pipeline):
    """The answer is the text the model wrote, call markup included: its entries are those of all its tokens
    (the call's kept aside), unary and streamed, and not the end-of-sequence token's after it."""
    stage, route = routed_stage(pipeline, OutputSpec([], tool_parser="hermes", tools=TOOLS, tool_mode="auto"))
    outputs = one_token_outputs(pipeline, CUT_CALL) + [LLMEngineOutput(token_ids=[2], log_probs=[-0.5])]
    choice, hold, shown = Choice(0, stage), HeldCalls(is_json), []
    for d in folded(stage, outputs, 3):
        collect(choice, d)
        if (sent := hold.take(d)) is not None:
            shown.append(sent)
    answer = chat_choice(choice, "reasoning_content", None, is_json)["message"]["content"]  # Responses' rule
    assert answer == CUT_CALL and token_text(pipeline, [ChoiceDelta(logprobs=route.written_as(answer))]) == CUT_CALL
    start = sum(len(d.logprobs) for d in shown)
    rest = hold.release(stage, lambda text: route.written_as(text, start))[0]
    assert token_text(pipeline, shown + rest) == CUT_CALL


def streamed(deltas: list[ChoiceDelta]) -> tuple[list[dict], list[dict]]:
    """The events of one-output deltas (each routed, as the output stage routes it), calls held."""
    events, route, hold = OutputEvents(RENDER), TextLogprobs(decode), HeldCalls(is_json)
    body = b"".join(events.delta(sent) for d in deltas if (sent := hold.take(route.take(d))) is not None)
    written = SimpleNamespace(tool_input_text=lambda: "".join(d.content for d in deltas))  # the fallback's
    body += b"".join(events.delta(d) for d in hold.release(written)[0]) + events.finish(False)
    return sse_events(body), events.output()


def test_stream_events_and_the_part_carry_the_texts_logprobs_in_the_sdks_shapes():
    events, items = streamed([ChoiceDelta("", "Plan.", logprobs=entries(1, top=2)),
                              ChoiceDelta("Hel", logprobs=entries(2, top=2)),
                              ChoiceDelta("lo", logprobs=entries(3, top=2))])
    for event in events:
        check_event(event)
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert [[lp["token"] for lp in e["logprobs"]] for e in deltas] == [["t2"], ["t3"]]
    assert "bytes" not in deltas[0]["logprobs"][0]  # the event schema's entries have none
    assert [t["token"] for t in deltas[0]["logprobs"][0]["top_logprobs"]] == ["t2", "t3"]
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert [lp["token"] for lp in done["logprobs"]] == ["t2", "t3"]
    message = check_output_item(wire(items[1]))
    logprobs = message.content[0].logprobs
    assert [(lp.token, lp.bytes) for lp in logprobs] == [("t2", list(b"t2")), ("t3", list(b"t3"))]
    assert [t.token for t in logprobs[1].top_logprobs] == ["t3", "t4"]


def test_text_held_with_a_call_keeps_its_own_logprobs_not_the_calls():
    call = ToolCallDelta(0, "c", "f", "{}")
    events, _ = streamed([ChoiceDelta("Let me ", logprobs=entries(11)),
                          ChoiceDelta("check.", "", [call], logprobs=entries(12, 7))])
    done = next(e for e in events if e["type"] == "response.output_text.done")
    assert done["text"] == "Let me check." and [lp["token"] for lp in done["logprobs"]] == ["t11", "t12"]


def test_the_unary_answers_part_validates_with_its_logprobs():
    items = answer_items({"role": "assistant", "content": "Hi"}, "reasoning_content", False,
                         logprobs=RENDER(entries(1, 2, top=1)))
    assert sdk.ResponseOutputMessage.model_validate(wire(items[0])).content[0].logprobs[1].token == "t2"
    assert answer_items({"role": "assistant", "content": "Hi"}, "x", False)[0]["content"][0]["logprobs"] == []


def chat_of(**body):
    return decode_responses(json.dumps({"model": "m", "input": "hi", **body}).encode()).to_chat()


def test_logprobs_are_asked_of_the_engine_only_when_included():
    asked = chat_of(include=["message.output_text.logprobs"], top_logprobs=5)
    assert (asked.logprobs, asked.top_logprobs, asked.top_logprobs_wanted()) == (True, 5, 5)
    assert chat_of(include=["message.output_text.logprobs"]).top_logprobs_wanted() == 0
    assert chat_of(top_logprobs=5).top_logprobs_wanted() is None  # not included: none, as OpenAI
    assert chat_of(include=["reasoning.encrypted_content"]).top_logprobs_wanted() is None


@pytest.mark.parametrize("value, code", [(21, "integer_above_max_value"), (-1, "integer_below_min_value"),
                                         ("3", "invalid_type"), (True, "invalid_type")])
def test_top_logprobs_outside_0_to_20_is_refused_as_openai_does(value, code):
    with pytest.raises(ApiError) as err:
        chat_of(include=["message.output_text.logprobs"], top_logprobs=value)
    assert (err.value.status, err.value.param, err.value.code) == (400, "top_logprobs", code)
    assert chat_of(include=["message.output_text.logprobs"], top_logprobs=20).top_logprobs == 20
    assert chat_of(include=["message.output_text.logprobs"], top_logprobs=0).top_logprobs_wanted() == 0


def test_include_takes_the_sdks_values_and_refuses_others_as_openai_does():
    for value in typing.get_args(sdk.ResponseIncludable):
        wanted = chat_of(include=[value]).top_logprobs_wanted()
        assert wanted == (0 if value == "message.output_text.logprobs" else None)
    with pytest.raises(ApiError) as err:
        chat_of(include=["message.output_text.logprobs", "output_text.logprobs"])
    assert (err.value.status, err.value.param, err.value.code) == (400, "include", "invalid_value")
    assert "'output_text.logprobs'" in err.value.message


def test_top_logprobs_of_another_type_is_named_as_openai_names_it():
    with pytest.raises(ApiError) as err:
        chat_of(include=["message.output_text.logprobs"], top_logprobs=2.5)
    assert "expected an integer, but got a decimal number instead" in err.value.message


def test_include_must_be_a_list():
    with pytest.raises(ApiError) as err:
        chat_of(include="message.output_text.logprobs")
    assert (err.value.status, err.value.param) == (400, "include")
