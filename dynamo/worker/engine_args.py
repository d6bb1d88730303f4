"""Settings, checks and derived values the workers' args classes (`dynamo.vllm`, `dynamo.sglang`,
`dynamo.trtllm`, `dynamo.mocker`) share: how the frontend presents the model (`ModelCardArgs`:
output parsers, a custom chat template, the default thinking mode, all carried in the model card),
the namespace a worker registers in (DYN_NAMESPACE_WORKER_SUFFIX), the `--endpoint`, `--endpoint-types` and
`--migration-limit` settings and the request-limit bounds."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError
from dynamo.llm.parser_names import THINKING_MODES, check_parser_names
from dynamo.runtime.config import setting
from dynamo.runtime.config_dump import DumpConfigTo
from dynamo.runtime.records import parse_endpoint
from dynamo.runtime.settings import discovery_backend_setting, event_plane_setting

ENDPOINT_TYPES = ("chat", "completions")


def namespace_worker_suffix_setting() -> Any:
    """DYN_NAMESPACE_WORKER_SUFFIX of every worker (env only, as in NVIDIA Dynamo; see `worker_namespace`)."""
    return setting(None, "Register in '{namespace}-{suffix}' (several sets of workers for one model; a router "
                         "given the same suffix looks for them there); no effect on an explicit --endpoint",
                   env="DYN_NAMESPACE_WORKER_SUFFIX", flag=False)


def worker_namespace(namespace: str, suffix: str | None) -> str:
    """The namespace a worker registers in: NVIDIA Dynamo's `get_worker_namespace`
    (dynamo/common/utils/namespace.py), '{namespace}-{suffix}' when the suffix is set and not empty."""
    return f"{namespace}-{suffix}" if suffix else namespace


def endpoint_setting() -> Any:
    """`--endpoint` / DYN_ENDPOINT of every worker (checked by `check_endpoint`)."""
    return setting(None, "Endpoint dyn://namespace.component.endpoint (default: backend.generate; prefill: "
                         "prefill.generate)")


def check_endpoint(endpoint: str | None) -> None:
    """ValueError unless `--endpoint` reads as dyn://namespace.component.endpoint: said while parsing the
    command line, not by a traceback once the engine has loaded."""
    if endpoint:
        try:
            parse_endpoint(endpoint)
        except ValueError as exc:
            raise ValueError(f"--endpoint: {exc}") from None


def migration_limit_setting() -> Any:
    """`--migration-limit` of the workers: accepted for older manifests, without effect (see
    `migration_limit_warnings`)."""
    return setting(0, "No effect here: the frontend's own --migration-limit decides how often a request may "
                      "move to another worker (NVIDIA Dynamo 1.6's workers have no such flag); set it on the "
                      "frontend")


def migration_limit_warnings(migration_limit: int) -> list[str]:
    """A start-up warning when the worker's --migration-limit is set: the frontend never reads it (from
    the model card or elsewhere), so a value here migrates nothing."""
    if migration_limit <= 0:
        return []
    return [f"--migration-limit {migration_limit}: no effect here; set --migration-limit on the frontend "
            "(its own limit decides migration)"]


@dataclass
class ModelCardArgs:
    """What every worker tells the frontend, through its model card, about presenting the model
    (NVIDIA Dynamo's runtime flags of the same names, on every engine).

    The parser fields are `dyn_*`, as in NVIDIA Dynamo: their flag's dest must not be the engines'
    own `reasoning_parser` / `tool_call_parser` (vLLM's and SGLang's `--reasoning-parser`, SGLang's
    `--tool-call-parser`), which belong to the engine and reach it unchanged."""

    dyn_tool_call_parser: str | None = setting(
        None, "Tool-call format the frontend parses from this model's output (hermes, llama3_json, mistral, "
              "pythonic, qwen3_coder, deepseek_v3, deepseek_v3_1, deepseek_v3_2, kimi_k2, glm45, glm47, minimax_m2, "
              "harmony, nemotron_deci, nemotron_nano, jamba, phi4, default)", env="DYN_TOOL_CALL_PARSER",
        flag="--dyn-tool-call-parser")
    dyn_reasoning_parser: str | None = setting(
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

    @property
    def tool_call_parser(self) -> str | None:
        """The card's `tool_call_parser` (what the frontend parses tool calls with)."""
        return self.dyn_tool_call_parser

    @property
    def reasoning_parser(self) -> str | None:
        """The card's `reasoning_parser`; never the engine's own `--reasoning-parser`."""
        return self.dyn_reasoning_parser

    def check_card_args(self) -> None:
        """ValueError on an unknown parser or an unreadable template file (at start-up, not at the
        first request); the template path is made absolute, as the card must name it."""
        check_parser_names(self.dyn_tool_call_parser, self.dyn_reasoning_parser)
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
    namespace_worker_suffix: str | None = namespace_worker_suffix_setting()
    endpoint: str | None = endpoint_setting()
    discovery_backend: str = discovery_backend_setting()
    event_plane: str | None = event_plane_setting()

    @property
    def worker_namespace(self) -> str:
        """Where the worker registers when no --endpoint says otherwise (`worker_namespace`)."""
        return worker_namespace(self.namespace, self.namespace_worker_suffix)


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
