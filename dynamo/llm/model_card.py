"""Model Deployment Card (MDC): what a worker registers about the model it serves,
under its lease at `v1/mdc/...`, and what the frontend builds its tokenizer, chat
template and limits from. Field names follow NVIDIA Dynamo's card where they exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import msgspec

# Files the frontend needs (never weights); key -> file name in the model dir.
CARD_FILES = {
    "hf_config_json": "config.json",
    "hf_tokenizer_json": "tokenizer.json",
    "hf_tokenizer_config_json": "tokenizer_config.json",
    "hf_chat_template": "chat_template.jinja",
    "hf_generation_config_json": "generation_config.json",
}

WORKER_TYPES = ("aggregated", "prefill", "decode")

# Parser names a worker may put in its card (`--dyn-tool-call-parser`, `--dyn-reasoning-parser`);
# the frontend's parser registry implements each (tests/frontend/test_parsers_contract.py).
TOOL_CALL_PARSERS = ("default", "hermes", "qwen25", "qwen3", "llama3_json", "mistral", "pythonic", "qwen3_coder",
                     "deepseek_v3", "harmony")
REASONING_PARSERS = ("basic", "qwen3", "qwen3_coder", "deepseek_r1", "gpt_oss", "mistral", "step3", "nemotron_nano",
                     "nemotron3", "kimi_k25")


def check_parser_names(tool_call_parser: str | None, reasoning_parser: str | None) -> None:
    """Workers refuse an unknown parser at start-up instead of the frontend at first request."""
    for flag, value, known in (("--dyn-tool-call-parser", tool_call_parser, TOOL_CALL_PARSERS),
                               ("--dyn-reasoning-parser", reasoning_parser, REASONING_PARSERS)):
        if value and value.replace("-", "_") not in known:
            raise ValueError(f"{flag}: unknown parser {value!r}; known: {', '.join(known)}")


class RuntimeConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    data_parallel_start_rank: int = 0
    data_parallel_size: int = 1
    # True when the worker publishes KV events on the event plane (exact KV routing).
    publishes_kv_events: bool = False
    enable_local_indexer: bool = False
    disaggregated_endpoint: dict[str, Any] | None = None
    # Output parsers the frontend applies to this model's text (Dynamo's MDC fields).
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    runtime_data: dict[str, Any] = msgspec.field(default_factory=dict)


class ModelDeploymentCard(msgspec.Struct, kw_only=True, omit_defaults=True):
    display_name: str
    slug: str
    model_path: str
    files: dict[str, str] = msgspec.field(default_factory=dict)  # CARD_FILES key -> absolute path
    context_length: int
    kv_cache_block_size: int
    migration_limit: int = 0
    model_type: list[str] = msgspec.field(default_factory=lambda: ["chat", "completions"])
    model_input: str = "tokens"
    worker_type: str = "aggregated"
    runtime_config: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)
    mdcsum: str = ""
    # Set when this model name is a LoRA adapter: its KV blocks hash in the adapter's namespace.
    lora_name: str | None = None
    base_model_path: str | None = None  # a LoRA card: the base model it applies to
    # A LoRA card: {"lora_adapter": true, "lora_id": n} (+ "lora_loading": true while it loads).
    user_data: dict[str, Any] | None = None
    max_gpu_lora_count: int | None = None


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "model"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def context_length_of(model_dir: Path) -> int | None:
    config = _read_json(model_dir / "config.json")
    for key in ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions"):
        if isinstance(config.get(key), int):
            return config[key]
    tok_cfg = _read_json(model_dir / "tokenizer_config.json")
    value = tok_cfg.get("model_max_length")
    if isinstance(value, int) and value < 10**9:
        return value
    return None


def card_checksum(card: ModelDeploymentCard) -> str:
    """Workers of one model must agree on this (name, files, context, block size)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(card.display_name.encode())
    for key in sorted(card.files):
        try:
            digest.update(Path(card.files[key]).read_bytes())
        except OSError:
            digest.update(card.files[key].encode())
    digest.update(f"{card.context_length}:{card.kv_cache_block_size}".encode())
    return digest.hexdigest()


def build_card(
    model_path: str | os.PathLike,
    *,
    name: str | None = None,
    block_size: int,
    context_length: int | None = None,
    worker_type: str = "aggregated",
    migration_limit: int = 0,
    runtime_config: RuntimeConfig | None = None,
    model_type: list[str] | None = None,
) -> ModelDeploymentCard:
    model_dir = Path(model_path).resolve()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model path {model_path} is not a directory")
    if not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"model path {model_path} has no tokenizer.json")
    if worker_type not in WORKER_TYPES:
        raise ValueError(f"worker_type must be one of {WORKER_TYPES}")
    files = {key: str(model_dir / fname) for key, fname in CARD_FILES.items() if (model_dir / fname).is_file()}
    display = name or str(model_path)
    card = ModelDeploymentCard(
        display_name=display,
        slug=slugify(display),
        model_path=str(model_dir),
        files=files,
        context_length=context_length or context_length_of(model_dir) or 8192,
        kv_cache_block_size=block_size,
        migration_limit=migration_limit,
        worker_type=worker_type,
        runtime_config=runtime_config or RuntimeConfig(),
        model_type=model_type or ["chat", "completions"],
    )
    card.mdcsum = card_checksum(card)
    return card


def card_model_dir(card: ModelDeploymentCard) -> Path:
    """Directory holding the card's tokenizer files (they sit side by side)."""
    path = card.files.get("hf_tokenizer_json")
    return Path(path).parent if path else Path(card.model_path)


card_encoder = msgspec.json.Encoder()
card_decoder = msgspec.json.Decoder(ModelDeploymentCard)
