"""Model Deployment Card (MDC): what a worker registers about the model it serves,
under its lease at `v1/mdc/...`, and what the frontend builds its tokenizer, chat
template and limits from.

The stored record is NVIDIA Dynamo 1.6's, field for field and in Dynamo's key order
(tests/compat/test_vectors.py holds it to a record Dynamo's own worker wrote):
`{type: "Model", namespace, component, endpoint, instance_id, card_json}` where the card
nests each file as a CheckedFile `{path, checksum: "blake3:<hex>", size}` under
`model_info`, `tokenizer`, `prompt_formatter`, `chat_template_file`, `gen_config` (and
`extra_files`), with `model_type` as Dynamo's flag list ("Chat | Completions"),
`model_input` "Tokens", and `runtime_config`. Our workers write local file paths (the
frontend shares the disk); a card whose paths are URLs (Dynamo's workers serve
`/v1/metadata/...`) is fetched and checksum-verified by `dynamo.llm.card_files`.

In memory `ModelDeploymentCard` keeps the names the rest of the code uses
(`context_length` is the effective limit, `model_type` a lowercase list); `card_record`
and `card_decoder` convert. `mdcsum` is not stored: it is derived from the file checksums.
"""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

import blake3
import msgspec

from dynamo.llm.parser_names import THINKING_MODES

# Files the frontend needs (never weights); key -> file name in the model dir.
CARD_FILES = {
    "hf_config_json": "config.json",
    "hf_tokenizer_json": "tokenizer.json",
    "hf_tokenizer_config_json": "tokenizer_config.json",
    "hf_chat_template": "chat_template.jinja",
    "hf_generation_config_json": "generation_config.json",
}
EXTRA_FILES = ("special_tokens_map.json",)  # sent along as Dynamo's card does


class WorkerType(enum.StrEnum):
    """The card's `worker_type`, as Dynamo spells it (the worker's flag is `WorkerRole`). Card
    fields stay `str`: a record from a newer peer with another type still decodes."""

    AGGREGATED = "aggregated"
    PREFILL = "prefill"
    DECODE = "decode"


# Dynamo's ModelType flags, in its bit order (the order it prints them in).
MODEL_TYPES = ("chat", "completions", "embedding", "images", "audios", "videos", "tensor", "prefill", "classify",
               "pooling", "rerank")  # Dynamo 1.6's newer flags last
_MODEL_TYPE_NAMES = {"chat": "Chat", "completions": "Completions", "embedding": "Embedding", "classify": "Classify",
                     "pooling": "Pooling", "images": "Images", "audios": "Audios", "videos": "Videos",
                     "tensor": "TensorBased", "prefill": "Prefill", "rerank": "Rerank"}
_MODEL_TYPE_KEYS = {v.lower(): k for k, v in _MODEL_TYPE_NAMES.items()}
_MODEL_INPUTS = {"tokens": "Tokens", "text": "Text", "tensor": "Tensor"}

# `--dyn-default-thinking-mode`: the worker puts it in `runtime_data` under this key (as Dynamo's do).
DEFAULT_THINKING_MODE_KEY = "default_thinking_mode"
# The media a worker's engine reads with a prompt ("image"), in its card's `runtime_data` under this key:
# the frontend sends images only to a model whose workers say they read them.
MEDIA_INPUT_KEY = "media_input"
# True in a card's `runtime_data` where the worker's engine holds its output to `guided_decoding` (vLLM's
# structured outputs): the frontend then asks it for tool_choice required / named calls as JSON even when
# the model has a tool-call format parser (`frontend/preparation.forced_tool_json`).
STRUCTURED_OUTPUT_KEY = "structured_output"


class CheckedFile(msgspec.Struct):
    """A file the card points at: local path or URL, `blake3:<hex>` checksum, size in bytes."""

    path: str
    checksum: str
    size: int


def checked_file(path: Path) -> CheckedFile:
    data = path.read_bytes()
    return CheckedFile(str(path), "blake3:" + blake3.blake3(data).hexdigest(), len(data))


class RuntimeConfig(msgspec.Struct, kw_only=True):
    """Dynamo's `runtime_config`, fields in its order (wire names where ours differ)."""

    context_length: int | None = None
    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    # Output parsers the frontend applies to this model's text.
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    tool_call_arguments_format: str = "json_string"
    tokenizer_backend: str | None = None
    structural_tag: dict[str, Any] | None = None
    structural_tag_mode: str = "off"
    structural_tag_scope: str = "auto"
    structural_tag_schema: str = "auto"
    exclude_tools_when_tool_choice_none: bool = True
    data_parallel_start_rank: int = 0
    data_parallel_size: int = 1
    enable_local_indexer: bool = False  # the worker answers worker_kv_indexer_query (re-sync)
    # True when the worker publishes KV events on the event plane (exact KV routing).
    publishes_kv_events: bool | None = msgspec.field(default=None, name="kv_event_publishing_enabled")
    runtime_data: dict[str, Any] = msgspec.field(default_factory=dict)
    disaggregated_endpoint: dict[str, Any] | None = None
    enable_eagle: bool = False


# Dynamo leaves these out when unset (serde skip_serializing_if); the rest are always written.
_RC_OPTIONAL = ("context_length", "tokenizer_backend", "structural_tag", "kv_event_publishing_enabled",
                "disaggregated_endpoint")


class ModelDeploymentCard(msgspec.Struct, kw_only=True):
    display_name: str
    slug: str
    model_path: str  # Dynamo's source_path
    files: dict[str, CheckedFile] = msgspec.field(default_factory=dict)  # CARD_FILES key -> file
    extra_files: list[CheckedFile] = msgspec.field(default_factory=list)
    context_length: int  # effective limit: the override, else the model's own
    architectural_max_context_length: int = 0  # from the model's config (0: unknown)
    kv_cache_block_size: int
    migration_limit: int = 0
    model_type: list[str] = msgspec.field(default_factory=lambda: ["chat", "completions"])
    model_input: str = "tokens"
    worker_type: str = WorkerType.AGGREGATED
    runtime_config: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    mdcsum: str = ""  # derived (card_checksum), never stored
    # Set when this model name is a LoRA adapter: its KV blocks hash in the adapter's namespace.
    lora_name: str | None = None
    base_model_path: str | None = None  # a LoRA card: the base model it applies to
    # A LoRA card: {"lora_adapter": true, "lora_id": n} (+ "lora_loading": true while it loads).
    user_data: dict[str, Any] | None = None
    max_gpu_lora_count: int | None = None
    # `hf_chat_template` is the worker's `--custom-jinja-template`, not the model's own file.
    chat_template_custom: bool = False

    @property
    def default_thinking_mode(self) -> str | None:
        """The worker's `--dyn-default-thinking-mode` ("enabled" / "disabled"), None when unset or unknown."""
        mode = self.runtime_config.runtime_data.get(DEFAULT_THINKING_MODE_KEY)
        return mode if mode in THINKING_MODES else None

    @property
    def media_input(self) -> tuple[str, ...]:
        """The media its workers read with a prompt (`("image",)`), none for a text-only model."""
        media = self.runtime_config.runtime_data.get(MEDIA_INPUT_KEY)
        return tuple(m for m in media if isinstance(m, str)) if isinstance(media, list) else ()


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "model"


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def context_length_of(model_dir: Path) -> int | None:
    config = read_json(model_dir / "config.json")
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    tok_cfg = read_json(model_dir / "tokenizer_config.json")
    value = tok_cfg.get("model_max_length")
    if isinstance(value, int) and value < 10**9:
        return value
    return None


def card_checksum(card: ModelDeploymentCard) -> str:
    """Workers of one model must agree on this (name, file checksums, context, block size)."""
    digest = blake3.blake3(card.display_name.encode())
    for key in sorted(card.files):
        digest.update(f"\0{key}={card.files[key].checksum}".encode())
    digest.update(f"\0{card.context_length}:{card.kv_cache_block_size}".encode())
    return digest.hexdigest()[:32]


def build_card(
    model_path: str | os.PathLike,
    *,
    name: str | None = None,
    block_size: int,
    context_length: int | None = None,
    worker_type: str = WorkerType.AGGREGATED,
    migration_limit: int = 0,
    runtime_config: RuntimeConfig | None = None,
    model_type: list[str] | None = None,
    chat_template: str | os.PathLike | None = None,
) -> ModelDeploymentCard:
    """The card of the model in `model_path`; `chat_template` (a Jinja file) replaces the model's own."""
    model_dir = Path(model_path).resolve()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model path {model_path} is not a directory")
    if not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"model path {model_path} has no tokenizer.json")
    if worker_type not in set(WorkerType):
        raise ValueError(f"worker_type must be one of {tuple(t.value for t in WorkerType)}")
    types = model_type or ["chat", "completions"]
    unknown = [t for t in types if t not in MODEL_TYPES]
    if unknown:
        raise ValueError(f"unknown model type(s) {unknown}; known: {MODEL_TYPES}")
    files = {key: checked_file(model_dir / fname) for key, fname in CARD_FILES.items() if (model_dir / fname).is_file()}
    if chat_template is not None:
        files["hf_chat_template"] = checked_file(Path(chat_template).resolve())
    extra = [checked_file(model_dir / fname) for fname in EXTRA_FILES if (model_dir / fname).is_file()]
    display = name or str(model_path)
    architectural = context_length_of(model_dir) or 0
    card = ModelDeploymentCard(
        display_name=display,
        slug=slugify(display),
        model_path=str(model_dir),
        files=files,
        extra_files=extra,
        context_length=context_length or architectural or 8192,
        architectural_max_context_length=architectural,
        kv_cache_block_size=block_size,
        migration_limit=migration_limit,
        worker_type=worker_type,
        runtime_config=runtime_config or RuntimeConfig(),
        model_type=types,
        chat_template_custom=chat_template is not None,
    )
    card.mdcsum = card_checksum(card)
    return card


def card_model_dir(card: ModelDeploymentCard) -> Path:
    """Local directory holding the card's tokenizer files side by side (fetched and
    verified first when the card points at URLs, as Dynamo's workers' cards do)."""
    from dynamo.llm.card_files import local_model_dir

    return local_model_dir(card)


# -- the stored record ---------------------------------------------------------------------

def _model_type_text(types: list[str]) -> str:
    return " | ".join(_MODEL_TYPE_NAMES[t] for t in MODEL_TYPES if t in types)


def card_json(card: ModelDeploymentCard) -> dict[str, Any]:
    """The card as Dynamo lays it out (a dict in Dynamo's key order)."""
    f = card.files
    out: dict[str, Any] = {"display_name": card.display_name, "slug": card.slug, "source_path": card.model_path}
    for section, key in (("model_info", "hf_config_json"), ("tokenizer", "hf_tokenizer_json"),
                         ("prompt_formatter", "hf_tokenizer_config_json")):
        if key in f:
            out[section] = {key: f[key]}
    if "hf_chat_template" in f:
        out["chat_template_file"] = {"hf_chat_template": {"is_custom": card.chat_template_custom,
                                                          "file": f["hf_chat_template"]}}
    if "hf_generation_config_json" in f:
        out["gen_config"] = {"hf_generation_config_json": f["hf_generation_config_json"]}
    arch = card.architectural_max_context_length
    out.update(architectural_max_context_length=arch,
               context_length=0 if card.context_length == arch else card.context_length,
               kv_cache_block_size=card.kv_cache_block_size, migration_limit=card.migration_limit,
               model_type=_model_type_text(card.model_type), model_input=_MODEL_INPUTS[card.model_input],
               worker_type=card.worker_type, needs=[])
    if card.lora_name is not None:
        out["lora"] = {"name": card.lora_name, **({"max_gpu_lora_count": card.max_gpu_lora_count}
                                                  if card.max_gpu_lora_count is not None else {})}
    user_data = dict(card.user_data or {})
    if card.base_model_path is not None:
        user_data["base_model"] = card.base_model_path  # Dynamo's card has no field for a LoRA's base
    if user_data:
        out["user_data"] = user_data
    rc = msgspec.to_builtins(card.runtime_config)
    for key in _RC_OPTIONAL:
        if rc.get(key) is None:
            rc.pop(key, None)
    if not rc.get("runtime_data"):
        rc.pop("runtime_data", None)
    out.update(runtime_config=rc, media_decoder=None, media_fetcher=None)
    if card.extra_files:
        out["extra_files"] = card.extra_files
    return out


def card_record(card: ModelDeploymentCard, namespace: str, component: str, endpoint: str, instance_id: int,
                model_suffix: str | None = None) -> bytes:
    """The `v1/mdc/...` value: Dynamo's DiscoveryInstance::Model record around the card."""
    record: dict[str, Any] = {"type": "Model", "namespace": namespace, "component": component, "endpoint": endpoint,
                              "instance_id": instance_id, "card_json": card_json(card)}
    if model_suffix is not None:
        record["model_suffix"] = model_suffix
    return msgspec.json.encode(record)


class _ChatTemplate(msgspec.Struct):
    is_custom: bool = False
    file: CheckedFile | None = None


class _Lora(msgspec.Struct):
    name: str
    max_gpu_lora_count: int | None = None


class _WireCard(msgspec.Struct, kw_only=True):
    """Reader of Dynamo's card_json: lenient where Dynamo itself has defaults."""

    display_name: str
    slug: str = ""
    source_path: str = ""
    model_info: dict[str, CheckedFile] | None = None
    tokenizer: dict[str, CheckedFile] | None = None
    prompt_formatter: dict[str, CheckedFile] | None = None
    chat_template_file: dict[str, _ChatTemplate] | None = None
    gen_config: dict[str, CheckedFile] | None = None
    architectural_max_context_length: int = 0
    context_length: int = 0
    kv_cache_block_size: int
    migration_limit: int = 0
    model_type: str = "Chat | Completions"
    model_input: str = "Tokens"
    worker_type: str = WorkerType.AGGREGATED
    lora: _Lora | None = None
    user_data: dict[str, Any] | None = None
    runtime_config: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    extra_files: list[CheckedFile] = msgspec.field(default_factory=list)


class _WireRecord(msgspec.Struct, tag="Model", tag_field="type"):
    namespace: str
    component: str
    endpoint: str
    instance_id: int
    card_json: _WireCard
    model_suffix: str | None = None


def _parse_model_type(text: str) -> list[str]:
    names = [part.strip().lower() for part in text.split("|") if part.strip()]
    return [_MODEL_TYPE_KEYS.get(n, n) for n in names]


def card_from_json(wire: _WireCard) -> ModelDeploymentCard:
    files: dict[str, CheckedFile] = {}
    for section in (wire.model_info, wire.tokenizer, wire.prompt_formatter, wire.gen_config):
        files.update(section or {})
    custom = False
    for key, template in (wire.chat_template_file or {}).items():
        if template.file is not None:
            files[key] = template.file
            custom = custom or template.is_custom
    user_data = dict(wire.user_data) if wire.user_data else None
    base = user_data.pop("base_model", None) if user_data else None
    rc = wire.runtime_config
    card = ModelDeploymentCard(
        display_name=wire.display_name, slug=wire.slug or slugify(wire.display_name), model_path=wire.source_path,
        files=files, extra_files=wire.extra_files,
        context_length=wire.context_length or rc.context_length or wire.architectural_max_context_length or 8192,
        architectural_max_context_length=wire.architectural_max_context_length,
        kv_cache_block_size=wire.kv_cache_block_size, migration_limit=wire.migration_limit,
        model_type=_parse_model_type(wire.model_type), model_input=wire.model_input.lower(),
        worker_type=wire.worker_type, runtime_config=rc,
        lora_name=wire.lora.name if wire.lora else None, base_model_path=base, user_data=user_data or None,
        max_gpu_lora_count=wire.lora.max_gpu_lora_count if wire.lora else None, chat_template_custom=custom)
    card.mdcsum = card_checksum(card)
    return card


class _CardDecoder:
    """`decode(v1/mdc value) -> ModelDeploymentCard`; raises msgspec errors on a bad record."""

    _decoder = msgspec.json.Decoder(_WireRecord)

    def decode(self, raw: bytes) -> ModelDeploymentCard:
        return card_from_json(self._decoder.decode(raw).card_json)


card_decoder = _CardDecoder()
