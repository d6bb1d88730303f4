"""Settings, checks and derived values the workers' args classes (`dynamo.vllm`, `dynamo.sglang`,
`dynamo.trtllm`, `dynamo.mocker`) share: how the frontend presents the model (`ModelCardArgs`:
output parsers, a custom chat template, the default thinking mode, all carried in the model card),
the `--endpoint-types` list and the request-limit bounds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError
from dynamo.llm.parser_names import THINKING_MODES, check_parser_names
from dynamo.runtime.config import setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting

ENDPOINT_TYPES = ("chat", "completions")


@dataclass
class ModelCardArgs:
    """What every worker tells the frontend, through its model card, about presenting the model
    (NVIDIA Dynamo's runtime flags of the same names, on every engine)."""

    tool_call_parser: str | None = setting(
        None, "Tool-call format the frontend parses from this model's output (hermes, llama3_json, mistral, "
              "pythonic, qwen3_coder, deepseek_v3, deepseek_v3_1, deepseek_v3_2, kimi_k2, glm45, glm47, minimax_m2, "
              "harmony, nemotron_deci, nemotron_nano, jamba, phi4, default)", env="DYN_TOOL_CALL_PARSER",
        flag="--dyn-tool-call-parser")
    reasoning_parser: str | None = setting(
        None, "Reasoning format the frontend splits into reasoning_content (basic, qwen3, deepseek_r1, gpt_oss, glm45, "
              "kimi_k2, minimax_m2, granite, ...)",
        env="DYN_REASONING_PARSER", flag="--dyn-reasoning-parser")
    custom_jinja_template: str | None = setting(
        None, "Jinja chat template file the frontend renders prompts with, in place of the model's own "
              "($VARS and ~ expanded)", env="DYN_CUSTOM_JINJA_TEMPLATE")
    default_thinking_mode: str | None = setting(
        None, "Thinking on or off in the chat template when a request does not say (enable_thinking, thinking, "
              "thinking_mode); the request's thinking, reasoning_effort or template kwargs win",
        env="DYN_DEFAULT_THINKING_MODE", flag="--dyn-default-thinking-mode", choices=list(THINKING_MODES))

    def check_card_args(self) -> None:
        """ValueError on an unknown parser or an unreadable template file (at start-up, not at the
        first request); the template path is made absolute, as the card must name it."""
        check_parser_names(self.tool_call_parser, self.reasoning_parser)
        if self.custom_jinja_template:
            path = Path(os.path.expandvars(os.path.expanduser(self.custom_jinja_template))).resolve()
            if not path.is_file():
                raise ValueError(f"--custom-jinja-template: {self.custom_jinja_template} is not a file")
            try:
                ChatTemplate(path.read_text(encoding="utf-8"))
            except (ChatTemplateError, UnicodeDecodeError) as exc:
                raise ValueError(f"--custom-jinja-template {path}: {exc}") from exc
            self.custom_jinja_template = str(path)


@dataclass
class EngineWorkerArgs(ModelCardArgs, DumpConfigTo):
    """Where an engine worker registers and publishes (the first flags of `dynamo.vllm` and
    `dynamo.sglang`, after `--dump-config-to`; their subclasses add the rest after these)."""

    namespace: str = setting("dynamo", "Dynamo namespace", env="DYN_NAMESPACE")
    endpoint: str | None = setting(
        None, "Endpoint dyn://namespace.component.endpoint (default: backend.generate; prefill: prefill.generate)")
    discovery_backend: str = discovery_backend_setting()
    event_plane: str | None = event_plane_setting()


def endpoint_types_setting() -> Any:
    """`--endpoint-types` (alias Dynamo's older `--dyn-endpoint-types`) / DYN_ENDPOINT_TYPES."""
    return setting("chat,completions", "OpenAI endpoints to expose for this model (chat,completions; completions "
                                       "for template-less models)", flag=["--endpoint-types", "--dyn-endpoint-types"])


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
