"""Settings, checks and derived values the workers' args classes (`dynamo.vllm`, `dynamo.sglang`,
`dynamo.trtllm`, `dynamo.mocker`) share: the frontend parser flags, the `--endpoint-types`
list and the request-limit bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo.runtime.config import setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting

ENDPOINT_TYPES = ("chat", "completions")


@dataclass
class EngineWorkerArgs(DumpConfigTo):
    """Where an engine worker registers and publishes (the first flags of `dynamo.vllm` and
    `dynamo.sglang`, after `--dump-config-to`; their subclasses add the rest after these)."""

    namespace: str = setting("dynamo", "Dynamo namespace", env="DYN_NAMESPACE")
    endpoint: str | None = setting(
        None, "Endpoint dyn://namespace.component.endpoint (default: backend.generate; prefill: prefill.generate)")
    discovery_backend: str = discovery_backend_setting()
    event_plane: str | None = event_plane_setting()


def parse_endpoint_types(endpoint_types: str) -> list[str]:
    """`--endpoint-types` (comma-separated) as a list, blanks dropped."""
    return [t.strip() for t in endpoint_types.split(",") if t.strip()]


def check_limits_and_types(migration_limit: int, engine_request_limit: int, endpoint_types: str) -> None:
    """ValueError unless both limits are >= 0 and `--endpoint-types` names only chat/completions."""
    if migration_limit < 0 or engine_request_limit < 0:
        raise ValueError("--migration-limit and --engine-request-limit must be >= 0")
    types = parse_endpoint_types(endpoint_types)
    bad = set(types) - set(ENDPOINT_TYPES)
    if bad or not types:
        raise ValueError(f"--endpoint-types: unknown {sorted(bad)} (use chat, completions)")


def tool_call_parser_setting() -> Any:
    """`--dyn-tool-call-parser` / DYN_TOOL_CALL_PARSER (a fresh dataclass field per args class)."""
    return setting(None, "Tool-call format the frontend parses from this model's output (hermes, llama3_json, "
                         "mistral, pythonic, qwen3_coder, deepseek_v3, harmony, default)", env="DYN_TOOL_CALL_PARSER",
                   flag="--dyn-tool-call-parser")


def reasoning_parser_setting() -> Any:
    """`--dyn-reasoning-parser` / DYN_REASONING_PARSER (a fresh dataclass field per args class)."""
    return setting(None, "Reasoning format the frontend splits into reasoning_content (basic, qwen3, deepseek_r1, "
                         "gpt_oss, ...)", env="DYN_REASONING_PARSER", flag="--dyn-reasoning-parser")
