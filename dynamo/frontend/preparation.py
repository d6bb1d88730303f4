"""From a validated OpenAI request to what the workers get: the prompt's token ids (template and
tokenizer, or the client's ids), one wire request per choice carrying the request's trace ids
and routing hints, and the output stage's spec from the worker's card, with the request's one judgement
of where its prompt leaves the reasoning (for the output stage's parser and the reasoning budget alike). A request
prepared for a model card that a rolling update replaced before anything of its answer was sent is prepared
again, once, for the card served now (`prepared_again`)."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from concurrent.futures import Executor
from typing import Awaitable, Callable, NamedTuple, TypeVar

from dynamo.frontend.errors import CardChanged, bad_prompt, bad_request
from dynamo.frontend.openai import ChatCompletionRequest, stop_list, stop_token_ids
from dynamo.frontend.output import OutputSpec
from dynamo.frontend.parsers import make_reasoning_parser
from dynamo.frontend.parsers.base import PromptReasoning
from dynamo.frontend.tool_guidance import ReasoningStart
from dynamo.llm.model_card import STRUCTURED_OUTPUT_KEY, ModelDeploymentCard
from dynamo.llm.preprocessor import ModelPipeline, PreprocessError
from dynamo.llm.protocol import RoutingHints

log = logging.getLogger(__name__)
T = TypeVar("T")


class Served(NamedTuple):
    """What a request is prepared by, taken at once from its model's entry (`of`): the card and the pipeline
    (tokenizer, template, eos ids, max_tokens) of that card. Its tokens, wire requests and output stage all come
    from these, and only this card's workers take it (`Dispatcher.stream`'s `card`), whatever the entry follows
    by then: a switch there and back inside one preparation still runs it on one card throughout."""

    name: str
    card: ModelDeploymentCard
    pipeline: ModelPipeline

    @classmethod
    def of(cls, entry) -> "Served":
        return cls(entry.name, entry.card, entry.pipeline)


async def prepared_again(model: str, attempt: Callable[[int], Awaitable[T]], request_id: str | None = None,
                         again: Callable[[], None] | None = None) -> T:
    """Prepare and run the request (`attempt(0)`); prepared and run once more (`attempt(1)`) when the served card
    switched between its preparation and its dispatch before anything was sent (a CardChanged marked `unsent`;
    `again` is told). A second switch meanwhile, or one once its answer has begun, is the client's retryable 503."""
    try:
        return await attempt(0)
    except CardChanged as exc:
        if not exc.unsent:
            raise
    log.info("model %r changed its card while request %s was prepared; preparing it again", model, request_id)
    if again is not None:
        again()
    return await attempt(1)


def attempt_id(request_id: str | None, attempt: int) -> str | None:
    """The wire id of a request's `attempt`-th preparation: the first keeps the request's, a second is told apart
    (`.r1`), so workers and traces never see one id for two different token sequences."""
    return request_id if request_id is None or attempt == 0 else f"{request_id}.r{attempt}"


def first_attempt_id(wire_id: str) -> str:
    """`attempt_id`'s inverse: the id of the request's first attempt, which its client and logs know it by."""
    head, sep, number = wire_id.rpartition(".r")
    return head if sep and number.isdigit() else wire_id


def is_token_prompt(req) -> bool:
    """A completion given token ids: nothing to template or tokenize, only C-level checks that take
    about a millisecond for 5,000 tokens, so it runs inline; a hop through the prep pool would add
    a thread wake-up and GIL hand-offs to its TTFT on a busy frontend."""
    if isinstance(req, ChatCompletionRequest):
        return False
    prompt = req.prompt_input()
    return isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], str)


TOKEN_DATA = "nvext.token_data"


def client_prompt_ids(pipeline, req, hints: RoutingHints | None) -> list[int] | None:
    """`nvext.token_data`: the prompt as token ids an external router (an inference gateway's
    endpoint picker) already made from this request with the model's tokenizer, used as the prompt
    when the request also names its worker (`backend_instance_id` / `decode_worker_id` or their
    headers), so the frontend skips the template and tokenizer, as NVIDIA Dynamo does. Without a
    worker named the frontend tokenizes the request itself; malformed ids are a 400 either way
    (out-of-vocabulary ids and an over-long prompt raise PreprocessError, as a token prompt does)."""
    data = (req.nvext or {}).get("token_data")
    if data is None:
        return None
    if not isinstance(data, list) or not data or not all(type(t) is int for t in data):
        raise bad_request(f"{TOKEN_DATA} must be a non-empty array of token ids", TOKEN_DATA, "invalid_type")
    if hints is None or (hints.backend_instance_id is None and hints.decode_worker_id is None):
        return None
    return pipeline.completion_prompt_ids(data, TOKEN_DATA)  # PreprocessError: the caller's 400, as for any prompt


def prompt_ids(pipeline, req) -> list[int]:
    """Template + tokenize (may run on the prep pool); PreprocessError on a bad prompt."""
    if isinstance(req, ChatCompletionRequest):
        return pipeline.encode_prompt(chat_text(pipeline, req), "messages")
    return pipeline.completion_prompt_ids(req.prompt_input())


def chat_text(pipeline, req: ChatCompletionRequest) -> str:
    """The chat rendered through the model's template: what its prompt tokenizes from."""
    return pipeline.chat_prompt_text(req.message_dicts(), req.template_tools(), req.template_kwargs(),
                                     req.generation_prompt(), req.continue_final_message)


# Bodies up to this size are templated and tokenized inline (well under a millisecond); bigger
# ones on the prep pool, so that no request's size shows in another's latency...
PREP_INLINE_BYTES = 8192
# ...unless their text is mostly cached (agents resending a system prompt, tools and history): a
# chat body up to RENDER_INLINE_BYTES is rendered inline (microseconds per KiB) and, when its text is
# at most INLINE_TEXT_CHARS (~1 ms to assemble from the cache) with at most INLINE_NEW_CHARS left to
# tokenize (~1 ms), tokenized inline too. In a burst, a hop through the pool costs every request
# GIL hand-offs with the busy event loop: milliseconds of TTFT.
RENDER_INLINE_BYTES = 256 << 10
INLINE_TEXT_CHARS = 128 << 10
INLINE_NEW_CHARS = 4096
TOKENIZED_ELSEWHERE_WAIT_SECS = 5.0  # a piece another thread tokenizes; past it, the pool waits instead


async def prompt_ids_for(pipeline, req, body_size: int, pool: Executor) -> list[int]:
    """`prompt_ids`, inline when that is cheap, on `pool` when it is not. A burst of chats on one new
    system prompt tokenizes it once, on the pool, for the first; the others wait for it here, off
    the pool, and then go inline."""
    if body_size <= PREP_INLINE_BYTES or is_token_prompt(req):
        return prompt_ids(pipeline, req)
    loop = asyncio.get_running_loop()
    if not isinstance(req, ChatCompletionRequest) or body_size > RENDER_INLINE_BYTES:
        return await loop.run_in_executor(pool, prompt_ids, pipeline, req)
    text = chat_text(pipeline, req)
    if len(text) <= INLINE_TEXT_CHARS and await cheap_to_encode(pipeline, text):
        return pipeline.encode_prompt(text, "messages")
    return await loop.run_in_executor(pool, pipeline.encode_prompt, text, "messages")


async def cheap_to_encode(pipeline, text: str) -> bool:
    """Whether at most INLINE_NEW_CHARS of `text` are left to tokenize, once the pieces other
    threads are tokenizing (when that is all that stands in the way) are done."""
    cost = pipeline.encode_cost(text)
    if cost.pending and cost.new_chars <= INLINE_NEW_CHARS:
        await tokenized_elsewhere(pipeline, cost.pending)
        cost = pipeline.encode_cost(text)
    return not cost.pending and cost.new_chars <= INLINE_NEW_CHARS


async def tokenized_elsewhere(pipeline, pieces: list, timeout: float = TOKENIZED_ELSEWHERE_WAIT_SECS) -> None:
    """Until the pieces other threads are tokenizing are done, or `timeout`; without a thread."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = len(pieces)

    def one_done() -> None:
        nonlocal left
        left -= 1
        if left == 0 and not done.done():
            done.set_result(None)

    def from_thread() -> None:  # on the tokenizing thread, maybe after this wait gave up
        try:
            loop.call_soon_threadsafe(one_done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    for key in pieces:
        if not pipeline.when_tokenized(key, from_thread):
            one_done()
    try:
        async with asyncio.timeout(timeout):
            await done
    except TimeoutError:
        pass


def wire_requests(pipeline, req, ids: list[int], is_chat: bool, hints: RoutingHints | None = None,
                  request_id: str | None = None, trace_id: str | None = None) -> list:
    """One wire request per choice (`n`), each with its own seed so the choices are
    independent samples, each with the client's routing hints and the request's trace ids
    (`request_id`: the frontend's for this request, else a new one)."""
    try:
        max_tokens = pipeline.max_tokens_for(ids, req.requested_max_tokens(), req.prompt_param)
    except PreprocessError as exc:
        raise bad_prompt(exc) from None
    vocab = pipeline.tokenizer.vocab_size
    if any(t >= vocab for t in stop_token_ids(req.stop)):
        raise bad_request(f"stop token ids must be in [0, {vocab})", "stop")
    request_id = ("chatcmpl-" if is_chat else "cmpl-") + (request_id or uuid.uuid4().hex)
    tool_json, tool_format = forced_tool_json(pipeline.card), pipeline.card.runtime_config.tool_call_parser
    # only a structural tag (tools and a response_format) needs it: the prompt's tail is decoded for nothing else
    needs_reasoning = is_chat and getattr(req, "tools", None) and getattr(req, "response_format", None)
    reasoning = reasoning_start(pipeline, ids) if needs_reasoning else None
    n = req.choices()
    if n == 1:
        out = [req.to_request(ids, request_id, pipeline.name, max_tokens, pipeline.eos_token_ids, tool_json,
                              tool_format, reasoning)]
    else:
        base = req.seed if req.seed is not None else random.getrandbits(31)
        out = []
        for i in range(n):
            preq = req.to_request(list(ids), f"{request_id}-{i}", pipeline.name, max_tokens,
                                  pipeline.eos_token_ids, tool_json, tool_format, reasoning)
            preq.sampling_options.seed = base + i
            out.append(preq)
    for preq in out:  # a LoRA adapter's model: the worker applies it, its KV blocks hash in its namespace
        preq.lora_name = pipeline.card.lora_name
        preq.routing = hints
        preq.trace_id = trace_id
    return out


# Enough for a template's reasoning tags and the whitespace around them: the one length both the
# output stage's parser and the reasoning budget judge the prompt by.
PROMPT_TAIL_TOKENS = 16


def output_spec(entry, req, is_chat: bool, prompt_ids: list[int] | None = None) -> OutputSpec:
    """What the output stage runs for this request: parsers from the worker's card, and where the
    prompt leaves the reasoning (also what the reasoning budget starts from, chat or completion)."""
    stops = stop_list(req.stop)
    if not is_chat:  # no reasoning parser on a completion: the judgement is the budget's alone
        budget = req.thinking_budget()[1] is not None
        return OutputSpec(stops, req.include_stop_str_in_output,
                          prompt_reasoning=prompt_reasoning(entry, prompt_ids) if budget else PromptReasoning.UNKNOWN)
    where = prompt_reasoning(entry, prompt_ids)
    rc = entry.card.runtime_config
    return OutputSpec(stops, req.include_stop_str_in_output, tool_parser=rc.tool_call_parser,
                      reasoning_parser=rc.reasoning_parser, tools=req.tools,
                      tool_mode=req.tool_choice_mode(), named_tool=req.named_tool(),
                      parallel_tool_calls=req.parallel_tool_calls is not False, prompt_reasoning=where,
                      tool_json=forced_tool_json(entry.card))


def forced_tool_json(card) -> bool:
    """Whether tool_choice required / named asks the engine for the calls as JSON (as vLLM and NVIDIA Dynamo
    do): always for a model without a tool-call format; for one with a format, only where the engine holds
    its output to the grammar (STRUCTURED_OUTPUT_KEY; an engine that ignores it writes the model's own
    format, which its parser reads) and the model does not reason first (a grammar from the first token
    would leave no room for its reasoning)."""
    rc = card.runtime_config
    if not rc.tool_call_parser:
        return True
    return bool(rc.runtime_data.get(STRUCTURED_OUTPUT_KEY)) and not rc.reasoning_parser


def prompt_reasoning(entry, prompt_ids: list[int] | None) -> PromptReasoning:
    """Where the end of the prompt, where a template may have opened (or closed) the reasoning for
    the model, leaves it, as the model's reasoning parser reads the text there."""
    return _judged(entry.card.runtime_config.reasoning_parser, entry.pipeline, prompt_ids)


def reasoning_start(pipeline, prompt_ids: list[int]) -> ReasoningStart | None:
    """The card's reasoning parser and where the prompt leaves the reasoning, for a constraint that must
    leave the model room to reason first (`tool_guidance.thinking`); None for a model that does not."""
    name = pipeline.card.runtime_config.reasoning_parser
    return ReasoningStart(name, _judged(name, pipeline, prompt_ids)) if name else None


def _judged(name: str | None, pipeline, prompt_ids: list[int] | None) -> PromptReasoning:
    if not name or not prompt_ids:
        return PromptReasoning.UNKNOWN
    tail = pipeline.tokenizer.decode(prompt_ids[-PROMPT_TAIL_TOKENS:], skip_special_tokens=False)
    return make_reasoning_parser(name).judge_prompt(tail)
