"""Where a stream's reasoning crosses its budget (frontend/thinking_budget.py): tokens after the
opening tag count (from the start where the template opened it, as the reasoning parser judges the
prompt: what the client is shown as reasoning is what counts), a tag split across outputs is found,
the batch is cut exactly at the budget with its logprobs, and a model that closes its reasoning in
time is left alone."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.frontend.model_entry import ModelEntry
from dynamo.frontend.openai import decode_request
from dynamo.frontend.output import OutputStage
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.preparation import output_spec, wire_requests
from dynamo.frontend.thinking_budget import ThinkingBudget, ThinkMarkers, budget_for, think_markers
from dynamo.llm.model_card import build_card
from dynamo.llm.preprocessor import ModelPipeline
from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, StopConditions
from dynamo.llm.tokenizer import Tokenizer

START, END = (1, 2), (3, 4)  # two-token tags, as a BPE without added tokens spells `<think>`
TAGS = ThinkMarkers(START, END, starts_inside=False, close=END)


def outs(*batches: list[int]) -> list[LLMEngineOutput]:
    return [LLMEngineOutput(token_ids=list(b)) for b in batches]


def ids(outputs: list[LLMEngineOutput]) -> list[int]:
    return [t for out in outputs for t in out.token_ids]


def test_reasoning_is_cut_at_the_budget_counting_from_the_opening_tag():
    budget = ThinkingBudget(3, TAGS)
    kept, spent = budget.spend(outs([9, 1], [2, 50, 51], [52, 53, 54]))  # text, a split tag, then 5 thoughts
    assert spent and ids(kept) == [9, 1, 2, 50, 51, 52]
    assert budget.closing_output().token_ids == list(END)
    assert budget.spend(outs([70, 71])) == (outs([70, 71]), False)  # the answer after it: not counted


def test_a_model_that_closes_its_reasoning_in_time_is_left_alone():
    budget = ThinkingBudget(3, TAGS)
    stream = outs([1, 2, 50, 51, 52], [3], [4, 60, 61, 62, 63])  # exactly the budget, then the tag
    assert budget.spend(stream) == (stream, False)
    assert budget.spend(outs([1, 2, 7, 7, 7, 7])) == (outs([1, 2, 7, 7, 7, 7]), False)  # closed: done


def test_output_that_never_opens_reasoning_is_not_counted():
    budget = ThinkingBudget(0, TAGS)
    stream = outs(list(range(50, 80)))
    assert budget.spend(stream) == (stream, False)


def test_where_the_template_opened_reasoning_the_first_token_counts():
    budget = ThinkingBudget(2, ThinkMarkers(START, END, starts_inside=True, close=END))
    kept, spent = budget.spend(outs([50], [51, 52, 53]))
    assert spent and ids(kept) == [50, 51]


def test_a_zero_budget_closes_reasoning_at_once_and_keeps_the_first_outputs_cache_count():
    budget = ThinkingBudget(0, ThinkMarkers(START, END, starts_inside=True, close=END))
    first = LLMEngineOutput(token_ids=[50, 51], cached_tokens=32, log_probs=[-0.1, -0.2],
                            top_logprobs=[[(50, -0.1)], [(51, -0.2)]], finish_reason="length")
    kept, spent = budget.spend([first])
    assert spent and len(kept) == 1
    assert kept[0].token_ids == [] and kept[0].cached_tokens == 32 and kept[0].finish_reason is None
    assert kept[0].log_probs == [] and kept[0].top_logprobs == []


def test_a_cut_output_keeps_the_logprobs_of_its_kept_tokens_and_drops_its_finish():
    budget = ThinkingBudget(1, TAGS)
    out = LLMEngineOutput(token_ids=[1, 2, 50, 51, 52], log_probs=[-1.0, -2.0, -3.0, -4.0, -5.0],
                          finish_reason="eos")
    kept, spent = budget.spend([out])
    assert spent and kept[0].token_ids == [1, 2, 50] and kept[0].log_probs == [-1.0, -2.0, -3.0]
    assert kept[0].finish_reason is None


def test_the_budget_leaves_the_wire_request_only_where_the_frontend_enforces_it():
    request = PreprocessedRequest(request_id="r", model="m", token_ids=[5],
                                  stop_conditions=StopConditions(max_tokens=9, max_thinking_tokens=4))
    sent, budget = budget_for(request, TAGS)
    assert budget is not None and budget.budget == 4 and sent.stop_conditions.max_thinking_tokens is None
    assert sent.stop_conditions.max_tokens == 9
    sent, budget = budget_for(request, None)  # no tags known: the engine enforces it, or refuses
    assert budget is None and sent.stop_conditions.max_thinking_tokens == 4


def test_markers_come_from_the_models_reasoning_parser_in_its_own_tokens(tiny_model):
    tokenizer = Tokenizer.from_dir(tiny_model)
    qwen3 = think_markers("qwen3", tokenizer)
    assert qwen3 is not None and not qwen3.starts_inside
    assert tokenizer.decode(qwen3.start) == "<think>" and tokenizer.decode(qwen3.end) == "</think>"
    assert think_markers("deepseek_r1", tokenizer).starts_inside
    harmony = think_markers("gpt_oss", tokenizer)  # the analysis message, closed into the final channel
    assert tokenizer.decode(harmony.start, skip_special_tokens=False) == "<|channel|>analysis<|message|>"
    assert tokenizer.decode(harmony.close, skip_special_tokens=False) == \
        "<|end|><|start|>assistant<|channel|>final<|message|>"
    assert think_markers(None, tokenizer) is None


def test_a_close_longer_than_the_end_is_appended_whole_or_after_what_the_model_wrote_of_it():
    harmony = ThinkMarkers(START, END, starts_inside=False, close=END + (5, 6))
    budget = ThinkingBudget(1, harmony)
    assert budget.spend(outs([1, 2, 50, 51]))[1] and budget.closing_output().token_ids == [3, 4, 5, 6]
    budget = ThinkingBudget(1, harmony)
    assert budget.spend(outs([1, 2, 50, 3, 60]))[1] and budget.closing_output().token_ids == [4, 5, 6]


def test_a_closing_tag_begun_at_the_budget_is_finished_not_doubled():
    budget = ThinkingBudget(2, TAGS)
    kept, spent = budget.spend(outs([1, 2, 50, 51, 3, 60]))  # at the budget, half a tag, then not the rest
    assert spent and ids(kept) == [1, 2, 50, 51, 3]
    assert budget.closing_output().token_ids == [4]  # only what the tag still lacks


def test_the_budget_starts_where_the_prompt_left_the_reasoning():
    # The template opened the reasoning: counting starts at the first token, for any parser.
    budget = ThinkingBudget(2, TAGS, PromptReasoning.OPENED)
    kept, spent = budget.spend(outs([50], [51, 52, 53]))
    assert spent and ids(kept) == [50, 51]
    # The template closed it (thinking off, `<think></think>`): nothing to count, even where the parser
    # expects the output to start inside.
    forced = ThinkMarkers(START, END, starts_inside=True, close=END)
    budget = ThinkingBudget(0, forced, PromptReasoning.CLOSED)
    stream = outs(list(range(50, 60)))
    assert budget.spend(stream) == (stream, False)
    # Neither: the parser's default, inside for a forced parser.
    budget = ThinkingBudget(0, forced, PromptReasoning.UNKNOWN)
    assert budget.spend(stream)[1]


@pytest.mark.parametrize("prompt_end,output,thought", [
    # `<think>` (five tokens here) then four whitespace tokens: past the budget's old eight-token look.
    ("<think> \n \n \n", "Weighing the weather first.</think>Sunny.", "Weighing the weather first."),
    # An opening tag with text after it: the parser reads no tag at the end; the budget's old look
    # found one in its last eight tokens and cut the answer.
    ("<think>\nOK", "Sunny and warm today, all day long.", ""),
])
def test_the_budget_counts_what_the_parser_shows_as_reasoning(tiny_model, prompt_end, output, thought):
    card = build_card(tiny_model, name="tiny", block_size=16)
    card.runtime_config.reasoning_parser = "qwen3"
    entry = ModelEntry("tiny", ModelPipeline(card), card)
    req = decode_request(msgspec.json.encode({"model": "tiny", "max_tokens": 64, "nvext": {"max_thinking_tokens": 3},
                                              "messages": [{"role": "user", "content": "Weather?"}]}), "chat")
    prompt = entry.pipeline.tokenizer.encode("<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
                                             + prompt_end)
    spec = output_spec(entry, req, True, prompt)
    (wire,) = wire_requests(entry.pipeline, req, prompt, True)
    _, budget = budget_for(wire, entry.think_markers, spec.prompt_reasoning)
    generated = entry.pipeline.tokenizer.encode(output)
    stage = OutputStage(entry.pipeline, spec)
    deltas = [stage.add(LLMEngineOutput(token_ids=[t])) for t in generated] + [stage.finish()]
    assert "".join(d.reasoning for d in deltas) == thought
    kept, spent = budget.spend(outs(generated))
    assert spent == bool(thought) and ids(kept) == (generated[:3] if thought else generated)
