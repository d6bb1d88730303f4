"""Frontend request -> vLLM request -> streamed token deltas (translation only; the
worker harness owns admission, aborts and error mapping).

`to_sampling_params` owns the mapping of our wire `PreprocessedRequest` onto vLLM's
`SamplingParams` (token ids in, DELTA outputs, no detokenization: the frontend
detokenizes and matches stop strings). `stream_outputs` drives `AsyncLLM.generate` for one
request and turns each `RequestOutput` into an `LLMEngineOutput`.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator, Callable

from dynamo.llm.kv_events.engine_decoder import SALT_PREFIX
from dynamo.llm.protocol import FinishReason, LLMEngineOutput, PreprocessedRequest, engine_priority
from dynamo.llm.structured_output import engine_structural_tag
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.role import WorkerRole

log = logging.getLogger(__name__)


def to_sampling_params(request: PreprocessedRequest, max_model_len: int, mode: WorkerRole = WorkerRole.AGG) -> Any:
    """vLLM SamplingParams for `request` (greedy when temperature is 0)."""
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    so, sc = request.sampling_options, request.stop_conditions
    kwargs: dict[str, Any] = {}
    for name in ("temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
                 "repetition_penalty"):
        value = getattr(so, name)
        if value is not None:
            kwargs[name] = value
    if kwargs.get("top_k") is not None and kwargs["top_k"] <= 0:
        kwargs["top_k"] = 0  # OpenAI-style "no limit" (vLLM: 0 or -1)
    max_tokens = sc.max_tokens
    if max_tokens is None:  # Dynamo: the rest of the context
        max_tokens = max(1, max_model_len - len(request.token_ids))
    stop_ids = list(sc.stop_token_ids_hidden or [])
    if not sc.ignore_eos:  # ignore_eos must not be undone by listing EOS as a stop token
        stop_ids += [t for t in request.eos_token_ids if t not in stop_ids]
    extra_args = dict(request.extra_args or {})
    if mode == WorkerRole.PREFILL or request.prefill_only:
        max_tokens = 1
        extra_args["kv_transfer_params"] = {"do_remote_decode": True, "do_remote_prefill": False,
                                            "remote_engine_id": None, "remote_block_ids": None,
                                            "remote_host": None, "remote_port": None}
    elif request.disaggregated_params:
        extra_args["kv_transfer_params"] = request.disaggregated_params
    if so.guided_decoding is not None:
        kwargs["structured_outputs"] = structured_outputs(so.guided_decoding)
    if sc.max_thinking_tokens is not None:  # vLLM refuses it (a 400) unless it runs with --reasoning-config
        kwargs["thinking_token_budget"] = sc.max_thinking_tokens
    return SamplingParams(
        **kwargs,
        max_tokens=max_tokens,
        min_tokens=sc.min_tokens or 0,
        ignore_eos=sc.ignore_eos,
        stop_token_ids=stop_ids or None,
        logprobs=request.output_options.logprobs,
        detokenize=False,
        skip_special_tokens=request.output_options.skip_special_tokens,
        output_kind=RequestOutputKind.DELTA,
        extra_args=extra_args or None,
    )


def structured_outputs(guided: Any) -> Any:
    """Our `guided_decoding` as vLLM's structured-output constraint (None: none is sent)."""
    from vllm.sampling_params import StructuredOutputsParams

    kwargs: dict[str, Any] = {}
    if guided.json is not None:
        kwargs["json"] = guided.json
    elif guided.json_object:
        kwargs["json_object"] = True
    elif guided.regex:
        kwargs["regex"] = guided.regex
    elif guided.choice:
        kwargs["choice"] = guided.choice
    elif guided.grammar:
        kwargs["grammar"] = guided.grammar
    elif guided.structural_tag is not None:
        text = engine_structural_tag(guided.structural_tag)  # vLLM takes it as JSON text
        if text is None:
            return None
        kwargs["structural_tag"] = text
    return StructuredOutputsParams(**kwargs)


def token_logprobs(completion: Any, top: int) -> tuple[list[float], list | None]:
    """vLLM's per-position {token id: Logprob} maps -> the sampled tokens' logprobs and,
    with `top` > 0, the `top` most likely (id, logprob) pairs per position by rank."""
    sampled = [lp[t].logprob for t, lp in zip(completion.token_ids, completion.logprobs)]
    if not top:
        return sampled, None
    ranked = [sorted(((t, v) for t, v in lp.items() if v.rank is not None and v.rank <= top), key=lambda e: e[1].rank)
              for lp in completion.logprobs]
    return sampled, [[(t, v.logprob) for t, v in pos] for pos in ranked]


def finish_reason(completion: Any, eos_ids: set[int]) -> FinishReason | None:
    """vLLM's finish reason -> ours: a stop on EOS (or an EOS id) is `eos`."""
    reason = completion.finish_reason
    if reason is None:
        return None
    if reason == "stop":
        stop = completion.stop_reason
        return FinishReason.EOS if stop is None or stop in eos_ids else FinishReason.STOP
    if reason == "length":
        return FinishReason.LENGTH
    if reason == "abort":
        return FinishReason.CANCELLED
    return FinishReason.ERROR


def error_code(exc: Exception) -> ErrorCode | None:
    """vLLM's request errors as request-plane codes (None: let the harness decide)."""
    from vllm.exceptions import GracefulHTTPError, VLLMClientError

    if isinstance(exc, VLLMClientError):  # validation: prompt too long, bad params
        return ErrorCode.BAD_REQUEST
    if isinstance(exc, GracefulHTTPError):  # vLLM's own admission control
        return ErrorCode.OVERLOADED
    return None


def engine_prompt(tokens_prompt: Any, request: PreprocessedRequest, images: list | None = None) -> Any:
    """vLLM's prompt for the request: its token ids, its decoded images (vLLM expands each image
    placeholder the template wrote) and, for a request in a KV namespace (`nvext.cache_salt`), vLLM's
    `cache_salt` under `SALT_PREFIX`, by which the KV-event decoder tells our salt from other extra keys."""
    fields: dict[str, Any] = {"prompt_token_ids": request.token_ids}
    salt = request.routing.cache_salt if request.routing is not None else None
    if salt:
        fields["cache_salt"] = SALT_PREFIX + salt
    if images:
        fields["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return tokens_prompt(**fields)


async def stream_outputs(engine: Any, request: PreprocessedRequest, params: Any, request_id: str,
                         params_hook: Callable[[dict], dict] | None = None,
                         lora_request: Any = None, images: list | None = None) -> AsyncIterator[LLMEngineOutput]:
    """`AsyncLLM.generate` for one request, each DELTA `RequestOutput` as an `LLMEngineOutput`.
    The agent-hint priority goes along: vLLM orders by it under `--scheduling-policy priority`
    and ignores it under fcfs."""
    from vllm.inputs import TokensPrompt

    eos_ids = set(request.eos_token_ids)
    top = request.output_options.logprobs or 0
    first = True
    stream = engine.generate(engine_prompt(TokensPrompt, request, images), params, request_id,
                             lora_request=lora_request, priority=engine_priority(request.routing, lower_first=True))
    try:
        async for result in stream:
            completion = result.outputs[0]
            out = LLMEngineOutput(token_ids=list(completion.token_ids))
            if first:
                out.cached_tokens = result.num_cached_tokens or 0
                if images and result.prompt_token_ids is not None:  # the images' tokens count as prompt
                    out.prompt_tokens = len(result.prompt_token_ids)
                first = False
            if completion.logprobs:
                out.log_probs, out.top_logprobs = token_logprobs(completion, top)
            if result.finished:
                out.finish_reason = finish_reason(completion, eos_ids)
                if out.finish_reason == FinishReason.STOP:
                    out.stop_reason = completion.stop_reason
                if result.kv_transfer_params:
                    kv = result.kv_transfer_params
                    out.disaggregated_params = params_hook(kv) if params_hook else kv
            yield out
    finally:
        await stream.aclose()
