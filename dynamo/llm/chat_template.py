"""Chat template rendering: OpenAI-style messages -> prompt text, HF-compatible.

Owns loading the model's Jinja chat template (`chat_template.jinja`, else
`tokenizer_config.json["chat_template"]`), compiling it once in a sandbox with the
globals/filters HF templates expect, and rendering per request. Every failure caused by
the template or the request surfaces as `ChatTemplateError` (HTTP 400 at the frontend).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dynamo.llm.tokenizer import token_content


class ChatTemplateError(ValueError):
    """The chat template could not be loaded or rendered for this request."""


def _raise_exception(message: str):
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # HF semantics: non-ASCII kept verbatim and no HTML escaping (unlike jinja2's own tojson).
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _make_env() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


IMAGE_PARTS = ("image_url", "image")


def _flatten_content(content: list, role: Any = None) -> str | list[dict]:
    """Text parts joined into one string (what every template renders); a message with images keeps
    its parts, each image as `{"type": "image"}`, where vision models' templates write their placeholder."""
    if any(isinstance(part, dict) and part.get("type") in IMAGE_PARTS for part in content):
        return [{"type": "image"} if part.get("type") in IMAGE_PARTS
                else {"type": "text", "text": _part_text(part, role)} for part in content if isinstance(part, dict)]
    return "\n".join(_part_text(part, role) for part in content)


def _part_text(part: Any, role: Any = None) -> str:
    if isinstance(part, str):
        return part
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "refusal" and role == "assistant":
        # OpenAI lets an assistant's earlier refusal come back as a part: what it said, as text.
        return part.get("refusal") or ""
    if kind != "text":
        raise ChatTemplateError(f"unsupported message content part type {kind!r}: this model takes text only")
    return part.get("text") or ""


def _normalize_messages(messages) -> list[dict]:
    # Copy only the messages that need changing: rendering is per request.
    out = []
    for m in messages:
        if not isinstance(m, dict):
            raise ChatTemplateError(f"each message must be an object, got {type(m).__name__}")
        if isinstance(m.get("content"), list):
            m = {**m, "content": _flatten_content(m["content"], m.get("role"))}
        out.append(m)
    return out


# Template variables by which a request (or the frontend for it) says whether the model thinks:
# templates read one or another (Qwen3 `enable_thinking`, DeepSeek V3.1 `thinking`, ...).
THINKING_CONTROLS = ("thinking", "enable_thinking", "thinking_mode", "reasoning_effort")


def with_thinking_default(kwargs: dict[str, Any] | None, mode: str | None) -> dict[str, Any] | None:
    """The template variables with the deployment's default thinking mode ("enabled" / "disabled")
    set in each spelling, unless the request already controls thinking."""
    if mode is None or any(key in (kwargs or {}) for key in THINKING_CONTROLS):
        return kwargs
    on = mode == "enabled"
    return {**(kwargs or {}), "thinking": on, "enable_thinking": on, "thinking_mode": mode}


class ChatTemplate:
    def __init__(self, source: str, special_tokens: dict[str, str | None] | None = None):
        self.source = source
        self.special_tokens = {k: v for k, v in (special_tokens or {}).items() if v is not None}
        try:
            self._template = _make_env().from_string(source)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template does not compile: {e}") from e

    @classmethod
    def from_dir(cls, path, template_file: Path | None = None, template_text: str | None = None) -> ChatTemplate:
        """The model's template in directory `path`, or the Jinja file `template_file` (or the text
        `template_text`) instead; the special tokens still come from the model's tokenizer_config.json."""
        path = Path(path)
        try:
            cfg = json.loads((path / "tokenizer_config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            cfg = {}
        specials = {k: token_content(cfg.get(k)) for k in ("bos_token", "eos_token", "pad_token", "unk_token")}
        if template_text is not None:
            return cls(template_text, specials)
        jinja_file = template_file or path / "chat_template.jinja"
        if jinja_file.is_file():
            return cls(jinja_file.read_text(encoding="utf-8"), specials)
        return cls(_select_template(cfg.get("chat_template"), path), specials)

    def render(self, messages, /, *, add_generation_prompt: bool = True, tools: list | None = None,
               **template_kwargs) -> str:
        """`template_kwargs`: any names the client chose (`self`, `messages` included: positional-only above)."""
        try:
            # Caller kwargs may override the special tokens but never the core variables.
            return self._template.render(
                {**self.special_tokens, **template_kwargs} if template_kwargs else self.special_tokens,
                messages=_normalize_messages(messages),
                tools=tools,
                add_generation_prompt=add_generation_prompt,
            )
        except ChatTemplateError:
            raise
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template error: {e}") from e
        except Exception as e:  # template code failing on this request's data (TypeError, KeyError, ...)
            raise ChatTemplateError(f"chat template failed on this request: {type(e).__name__}: {e}") from e


def _select_template(value, path: Path) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        if isinstance(named.get("default"), str):
            return named["default"]
        raise ChatTemplateError(f"{path}: chat_template list has no 'default' entry (has {sorted(map(str, named))})")
    raise ChatTemplateError(f"{path}: no chat template (no chat_template.jinja, "
                            "no tokenizer_config.json chat_template)")
