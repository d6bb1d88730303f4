"""The frontend's own defaults for presenting a model: `--tool-call-parser`, `--reasoning-parser`
and `--chat-template`, as NVIDIA Dynamo's `--dyn-chat-processor vllm|sglang` frontends take them
(the engine's flags, on the frontend, for workers that name no parser).

A worker's own settings win: its card's parsers and its `--custom-jinja-template`. The frontend's
fill in what the card leaves unset. Parser names may be vLLM's or SGLang's spellings where ours
differ (`openai` is Harmony's tool format, `openai_gptoss` / `gpt-oss` its reasoning); an unknown
name stops the frontend at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dynamo.llm.chat_template import ChatTemplate, ChatTemplateError
from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.llm.parser_names import check_parser_names

TOOL_ALIASES = {"openai": "harmony", "gpt-oss": "harmony", "gpt_oss": "harmony", "llama3": "llama3_json",
                "qwen": "qwen25", "deepseekv3": "deepseek_v3"}
REASONING_ALIASES = {"openai_gptoss": "gpt_oss", "gpt-oss": "gpt_oss", "deepseek-r1": "deepseek_r1"}


def check_model_defaults(config: Any) -> None:
    """Normalize the config's parser names (ValueError on an unknown one) and turn `chat_template`
    into the template's text (ValueError when it neither names a file nor compiles)."""
    if config.tool_call_parser:
        config.tool_call_parser = TOOL_ALIASES.get(config.tool_call_parser, config.tool_call_parser)
    if config.reasoning_parser:
        config.reasoning_parser = REASONING_ALIASES.get(config.reasoning_parser, config.reasoning_parser)
    check_parser_names(config.tool_call_parser, config.reasoning_parser)
    if config.chat_template:
        path = Path(config.chat_template).expanduser()
        text = path.read_text(encoding="utf-8") if path.is_file() else config.chat_template
        if not path.is_file() and "{" not in text:
            raise ValueError(f"--chat-template: {config.chat_template} is not a file")
        try:
            ChatTemplate(text)
        except ChatTemplateError as exc:
            raise ValueError(f"--chat-template: {exc}") from None
        config.chat_template = text


@dataclass(frozen=True)
class ModelDefaults:
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    chat_template: str | None = None  # the template's text

    @classmethod
    def of(cls, config: Any) -> ModelDefaults:
        return cls(config.tool_call_parser, config.reasoning_parser, config.chat_template)

    def apply(self, card: ModelDeploymentCard) -> ModelDeploymentCard:
        """`card` (a decoded copy) with the parsers it leaves unset filled in."""
        rc = card.runtime_config
        rc.tool_call_parser = rc.tool_call_parser or self.tool_call_parser
        rc.reasoning_parser = rc.reasoning_parser or self.reasoning_parser
        return card

    def template_for(self, card: ModelDeploymentCard) -> str | None:
        """The frontend's template where the worker set none of its own (its card's is the model's)."""
        return None if card.chat_template_custom else self.chat_template
