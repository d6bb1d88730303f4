"""Frontend <-> worker wire messages: the preprocessed request a worker receives and
the engine outputs it streams back. Field names follow NVIDIA Dynamo's
`PreprocessedRequest` / `LLMEngineOutput`; encoded with msgpack on the request plane.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from dynamo.llm.kv_events.hashing import MediaSalt


class StopConditions(msgspec.Struct, omit_defaults=True, kw_only=True):
    max_tokens: int | None = None
    # Stop strings are matched and hidden by the frontend; workers see them for information.
    stop: list[str] | None = None
    # Token ids that end generation and are not shown (in addition to eos_token_ids).
    stop_token_ids_hidden: list[int] | None = None
    min_tokens: int | None = None
    ignore_eos: bool = False
    # nvext.max_thinking_tokens: the reasoning budget, for engines that enforce one (vLLM's
    # thinking_token_budget); workers whose engine cannot refuse the request.
    max_thinking_tokens: int | None = None


class GuidedDecodingOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Structured output (Dynamo's `guided_decoding`): at most one constraint is set."""

    json: Any = None  # a JSON schema (dict)
    json_object: bool = False  # any JSON object
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    backend: str | None = None
    # xgrammar's structural tag (`{"type": "structural_tag", "format": ...}`, Dynamo's field): what tool_choice
    # auto with a response_format asks for, the answer in its schema or the calls (`frontend/tool_guidance.py`).
    structural_tag: Any = None


class SamplingOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    n: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    guided_decoding: GuidedDecodingOptions | None = None


class OutputOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    # None: no logprobs; k >= 0: each sampled token's logprob plus the k most likely.
    logprobs: int | None = None
    skip_special_tokens: bool = True


class RoutingHints(msgspec.Struct, omit_defaults=True, kw_only=True):
    backend_instance_id: int | None = None
    prefill_worker_id: int | None = None
    decode_worker_id: int | None = None
    dp_rank: int | None = None
    prefill_dp_rank: int | None = None
    # nvext.agent_hints: a soft priority (higher first; seconds ahead in a fcfs router queue, a
    # weight in wspt) and a strict router-queue tier (higher tiers always first).
    priority: float | None = None
    strict_priority: int | None = None
    # nvext.agent_hints.latency_sensitivity (Dynamo's router-queue hint, seconds): how far ahead of its
    # arrival the request waits in the router queue, in place of `priority` there (which still reaches the
    # engine's own scheduler).
    latency_sensitivity: float | None = None
    # Agent session identity (`x-dynamo-session-id`, or a coding agent's own header): passive metadata
    # unless the frontend runs with --router-session-affinity-ttl-secs, which keeps a session on one worker.
    session_id: str | None = None
    parent_session_id: str | None = None
    session_final: bool = False  # the session's last request: its affinity binding closes after it
    # nvext.session_control: the client asks for affinity itself, whether or not the frontend runs with a
    # TTL of its own; its open/bind action sets how long the binding outlives the session's last request.
    session_control: bool = False
    session_ttl_secs: float | None = None
    osl: int | None = None  # nvext.agent_hints.osl: the answer's expected length in tokens
    # nvext.cache_salt / `x-tenant-id`: the KV-cache namespace of a tenant. Requests share cached
    # blocks (on the engine, and in the router's index) only within one namespace.
    cache_salt: str | None = None


class RouterParams(msgspec.Struct, omit_defaults=True, kw_only=True):
    """`nvext.router`, NVIDIA Dynamo's per-request SLA targets (milliseconds): a global router picks
    the pool whose grid cell holds them (`dynamo.global_router`); other routers ignore them."""

    ttft_target: float | None = None
    itl_target: float | None = None


# A strict tier outranks any soft priority when the two are folded into an engine's one integer.
STRICT_TIER = 1 << 20
# The tier of background work (the Batch API's requests): below every request a client sends, whose
# strict tiers are >= 0, in the router queue and in an engine's priority scheduler.
BACKGROUND_TIER = -1


def engine_priority(hints: RoutingHints | None, lower_first: bool) -> int:
    """The request's agent-hint priority for an engine's own scheduler (vLLM `--scheduling-policy
    priority`, SGLang `--enable-priority-scheduling`), where it orders waiting requests as it orders
    the router queue: strict tier first, then the soft priority (rounded; higher runs earlier).
    Negated for engines that run lower values first (vLLM; SGLang with
    `--schedule-low-priority-values-first`). 0 without hints, the engines' default."""
    if hints is None:
        return 0
    bound = STRICT_TIER // 2 - 1
    soft = max(-bound, min(bound, round(hints.priority or 0)))
    value = (hints.strict_priority or 0) * STRICT_TIER + soft
    return -value if lower_first else value


class PreprocessedRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    request_id: str
    model: str
    token_ids: list[int]
    stop_conditions: StopConditions = msgspec.field(default_factory=StopConditions)
    sampling_options: SamplingOptions = msgspec.field(default_factory=SamplingOptions)
    output_options: OutputOptions = msgspec.field(default_factory=OutputOptions)
    eos_token_ids: list[int] = msgspec.field(default_factory=list)
    routing: RoutingHints | None = None
    router: RouterParams | None = None  # nvext.router
    # Disaggregation: transfer parameters returned by a prefill worker, passed to decode.
    disaggregated_params: dict[str, Any] | None = None
    # Set on a request sent to a prefill worker (the backend's transfer marker).
    prefill_only: bool = False
    # "embed" / "classify": a pooling request (one input); the answer is one output carrying `embedding`.
    task: str | None = None
    # A pooling request carrying several inputs (`llm/pooling_batch.py`): `token_ids` are theirs one after
    # another, each this long; the answer is one output per input, its `index` naming it.
    pooling_lengths: list[int] | None = None
    extra_args: dict[str, Any] | None = None
    # The LoRA adapter to apply (the model name is the adapter's); None: the base model.
    lora_name: str | None = None
    # The frontend's trace id of the client request (W3C traceparent's, or its own): workers put it
    # on their request-trace log lines, so one id finds a request in every process's log.
    trace_id: str | None = None
    # Media the engine reads with the prompt, as NVIDIA Dynamo sends them: {"image_url": [{"Url": url}]}.
    multi_modal_data: dict[str, list[dict[str, Any]]] | None = None
    # Where the media start in `token_ids` and which they are: KV blocks from there on hash apart (the
    # router's and the mocker's); set by the frontend with `multi_modal_data`.
    media_salt: MediaSalt | None = None


class FinishReason(enum.StrEnum):
    """Why a sequence ended, spelt as NVIDIA Dynamo's `FinishReason` is on the wire (OpenAI names
    are derived in the frontend). `FinishReason(raw)` also reads Dynamo's other spellings."""

    EOS = "eos"
    LENGTH = "length"
    STOP = "stop"
    ERROR = "error"
    CANCELLED = "cancelled"
    CONTENT_FILTER = "content_filter"

    @classmethod
    def _missing_(cls, value: object) -> FinishReason | None:
        # Dynamo reads vLLM's "abort" as cancelled (a serde alias) and prints an error with its
        # message ("error: <message>"); anything else is not a finish reason (ValueError).
        if value == "abort":
            return cls.CANCELLED
        if isinstance(value, str) and value.startswith("error: "):
            return cls.ERROR
        return None


class LLMEngineOutput(msgspec.Struct, omit_defaults=True, kw_only=True, gc=False):
    """One streamed delta: the new token ids since the previous message (disjoint)."""

    token_ids: list[int] = msgspec.field(default_factory=list)
    # A FinishReason when set; typed `str` so a reason a newer peer sends still decodes.
    finish_reason: str | None = None
    # Prompt tokens served from the prefix cache; sent once, on the first message.
    cached_tokens: int | None = None
    # The prompt's length as the engine counts it, where that differs from the request's token ids (each
    # image placeholder expanded into the image's tokens): what usage reports; sent once, on the first message.
    prompt_tokens: int | None = None
    # Logprob of each of `token_ids`; with `output_options.logprobs = k > 0`, also the k most
    # likely (token id, logprob) pairs at each position, most likely first.
    log_probs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    disaggregated_params: dict[str, Any] | None = None
    embedding: list[float] | None = None
    index: int | None = None  # the input of a pooling batch that `embedding` belongs to
    error: str | None = None
    # With a `stop` finish: the engine's matched stop condition (a stop token id, or a stop string it
    # matched itself); None for EOS, as vLLM reports it.
    stop_reason: int | str | None = None


request_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(PreprocessedRequest)
output_decoder = msgspec.msgpack.Decoder(LLMEngineOutput)
