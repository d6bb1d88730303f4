"""`/v1/messages` (Anthropic's Messages API, served under `--enable-anthropic-api` as NVIDIA Dynamo
serves it, for Claude Code and other Anthropic clients), the request side: the request converts
itself to a chat request, so the model's own chat template, tool parser and reasoning parser apply
as on `/v1/chat/completions`; `/v1/messages/count_tokens` counts that prompt; and errors take
Anthropic's shape, `{"type": "error", "error": {"type", "message"}}` (plus our `param` and `code`).

Conversion:
- `system` (a string or text blocks) becomes the system message. With `--strip-anthropic-preamble` (the
  default) the `x-anthropic-billing-header:` line Claude Code puts first is dropped: it changes with every
  request and would make every prompt's first block new, so nothing would be reused from the cache.
- user blocks: `text`, text `document`s (a `text` or `content` source, titled) and `search_result`s
  (title, source, text) become the user message, and read as text inside a `tool_result` too; each `tool_result`
  becomes a tool message for its `tool_use_id` (one with `is_error` says so, "Error: ..." as Anthropic's
  own examples write it: chat templates have no place for the flag). Assistant blocks: `text`,
  `tool_use` (a tool call with the input as its JSON arguments), `thinking` (the message's reasoning;
  `redacted_thinking` is dropped: there is nothing to show the model). An `image` (base64 or URL source) becomes an
  `image_url` part where it stands, judged as on the chat path (a model that reads no images answers
  400); in a `tool_result`, which carries text only, an `[image]` note stands in.
- `tools` (`name`, `description`, `input_schema`) become functions; `tool_choice` `auto`, `any`
  (required), `tool` (named), `none`; `disable_parallel_tool_use` turns parallel calls off.
  Anthropic-defined client tools (`bash_...`, `text_editor_...`) are functions with the schemas their
  applications execute (`anthropic_tools`); Anthropic's server tools (`web_search_...`) and computer use
  cannot run here: a 400 says so.
- `thinking.type` `enabled`/`disabled` sets the template's `enable_thinking`. `budget_tokens` becomes
  the reasoning budget where the frontend enforces it (models whose reasoning parser uses tags, any
  engine: `thinking_budget`); elsewhere it is dropped, since engines that cannot enforce one would
  refuse the request and Claude Code sends one with any request.
- A last message of the assistant's, with text, is a prefill: the answer continues it (chat's
  `continue_final_message`, no new turn opened) and, as Anthropic's, holds only the continuation.
- `output_config.format` (or the structured-outputs beta's `output_format`), `{"type": "json_schema",
  "schema"}`, is chat's `response_format` json_schema: the engine is held to the schema and the text block
  is the JSON (`client.messages.parse` reads it). With an assistant prefill it is a 400, as Anthropic's.
- `stop_sequences`, `temperature`, `top_p`, `top_k`, `max_tokens` map one to one; `nvext` passes on.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from dynamo.frontend.anthropic_tools import client_tool_function
from dynamo.frontend.errors import ApiError, bad_request
from dynamo.frontend.openai import I64, ChatCompletionRequest, ChatMessage, decode_body
from dynamo.llm.preprocessor import ContextOverflow

PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
_BILLING_LINE = re.compile(r"^x-anthropic-billing-header:[^\n]*\n?", re.MULTILINE)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}
_USER_BLOCKS = ("text", "tool_result", "document", "image", "search_result")
_ASSISTANT_BLOCKS = ("text", "tool_use", "thinking", "redacted_thinking")


class MessagesRequest(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    messages: list[dict[str, Any]]
    max_tokens: I64 | None = None  # required on /v1/messages, absent on count_tokens
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: I64 | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    nvext: dict[str, Any] | None = None  # Dynamo's extension, as on chat: routing and agent hints
    output_config: dict[str, Any] | None = None  # its `format`: structured output (`effort` is not read)
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's name for output_config.format

    def thinking_budget(self) -> int | None:
        """`thinking.budget_tokens` when thinking is on and the budget is a count."""
        thinking = self.thinking if isinstance(self.thinking, dict) else {}
        budget = thinking.get("budget_tokens")
        enabled = thinking.get("type") == "enabled"
        return budget if enabled and isinstance(budget, int) and not isinstance(budget, bool) and budget >= 0 else None

    def to_chat(self, strip_preamble: bool, counting: bool = False) -> ChatCompletionRequest:
        """The equivalent chat request; this request owns the conversion (400s name Anthropic's fields)."""
        if not counting and (self.max_tokens is None or self.max_tokens < 1):
            raise bad_request("`max_tokens` is required and must be at least 1", "max_tokens")
        if not self.messages:
            raise bad_request("`messages` must contain at least one message", "messages")
        system = _system_text(self.system, strip_preamble)
        messages = [ChatMessage(role="system", content=system)] if system else []
        for i, message in enumerate(self.messages):
            messages += _converted(message, i)
        tools, choice, parallel = _tools(self.tools, self.tool_choice)
        kwargs = None
        if isinstance(self.thinking, dict) and self.thinking.get("type") in ("enabled", "disabled"):
            kwargs = {"enable_thinking": self.thinking["type"] == "enabled"}
        user = (self.metadata or {}).get("user_id")
        prefill = bool(messages) and _is_prefill(messages[-1])
        response_format = _response_format(self.output_config, self.output_format, prefill)
        return ChatCompletionRequest(model=self.model, messages=messages, stream=self.stream and not counting,
                                     response_format=response_format, max_tokens=self.max_tokens,
                                     temperature=self.temperature, top_p=self.top_p,
                                     top_k=self.top_k, stop=self.stop_sequences or None, tools=tools,
                                     tool_choice=choice, parallel_tool_calls=parallel, chat_template_kwargs=kwargs,
                                     user=user if isinstance(user, str) else None, nvext=self.nvext,
                                     add_generation_prompt=not prefill, continue_final_message=prefill)


decoder = msgspec.json.Decoder(MessagesRequest)


def _response_format(config: dict[str, Any] | None, beta: dict[str, Any] | None,
                     prefill: bool) -> dict[str, Any] | None:
    """Chat's `response_format` for Anthropic's structured output (`output_config.format`, or the beta's
    `output_format`: `{"type": "json_schema", "schema"}`), so the engine is held to the schema as a chat
    request's json_schema holds it, and the text block is the JSON."""
    fmt, where = (config or {}).get("format"), "output_config.format"
    if beta is not None:
        if fmt is not None:
            raise bad_request("`output_format` and `output_config.format` cannot both be given: use "
                              "output_config.format", "output_format")
        fmt, where = beta, "output_format"
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise bad_request(f"`{where}.type` must be json_schema", f"{where}.type")
    if not isinstance(fmt.get("schema"), dict):
        raise bad_request(f"`{where}.schema` must be a JSON Schema object", f"{where}.schema", "invalid_type")
    if prefill:  # the schema binds the whole answer, and a prefill already wrote its start (Anthropic refuses it)
        raise bad_request(f"`{where}` cannot be combined with an assistant prefill (a last assistant message)",
                          where, "unsupported_parameter")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True}}


def _is_prefill(last: ChatMessage) -> bool:
    """The conversation ends with the assistant's own start of an answer: text to continue (one ending in
    tool calls waits for their results instead)."""
    return (last.role == "assistant" and not last.tool_calls and isinstance(last.content, str)
            and bool(last.content.strip()))


def decode_messages(body: bytes) -> MessagesRequest:
    return decode_body(decoder, body)


def error_body(exc: ApiError) -> dict[str, Any]:
    """An error as Anthropic's clients read it: its type by HTTP status, the message (and our param, code)."""
    detail = exc.body()["error"]
    if exc.overflow is not None:
        detail["message"] = overflow_message(exc.overflow)
    return {"type": "error", "error": {**detail, "type": _ERROR_TYPES.get(exc.status, "api_error")}}


def overflow_message(overflow: ContextOverflow) -> str:
    """Anthropic's own wording, which its clients parse: Claude Code retries with a `max_tokens`
    that fits (the first form) and compacts the conversation on "prompt is too long"."""
    prompt, context = overflow.prompt_tokens, overflow.context_length
    if overflow.max_tokens is not None:
        return (f"input length and `max_tokens` exceed context limit: {prompt} + {overflow.max_tokens} > {context}, "
                "decrease input length or `max_tokens` and try again")
    # A prompt of exactly the context leaves no room for output: its maximum is one less.
    return f"prompt is too long: {prompt} tokens > {context if prompt > context else context - 1} maximum"


def strip_billing_preamble(text: str) -> str:
    return _BILLING_LINE.sub("", text)


def _system_text(system: str | list[dict[str, Any]] | None, strip_preamble: bool) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        texts = [system]
    else:
        texts = [_block_text(block, "system", j) for j, block in enumerate(system)]
    if strip_preamble:
        texts = [strip_billing_preamble(t) for t in texts]
    return "\n".join(t for t in texts if t)


def _block_text(block: Any, where: str, j: int) -> str:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise bad_request(f"{where}[{j}] must be a text block", f"{where}[{j}]")
    return block["text"]


def _converted(message: Any, i: int) -> list[ChatMessage]:
    where = f"messages[{i}]"
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise bad_request(f"{where}.role must be `user` or `assistant`", f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [ChatMessage(role=message["role"], content=content)]
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content blocks", f"{where}.content")
    allowed = _USER_BLOCKS if message["role"] == "user" else _ASSISTANT_BLOCKS
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind not in allowed:
            raise bad_request(f"{where}.content[{j}]: unsupported {message['role']} block {kind!r} (supported: "
                              f"{', '.join(allowed)})", f"{where}.content[{j}].type")
    if message["role"] == "user":
        return _user_messages(content, where)
    return [_assistant_message(content)]


def _user_messages(blocks: list[dict[str, Any]], where: str) -> list[ChatMessage]:
    """Tool results first, each its own tool message (they answer the previous turn's calls), then the
    user's own text as one message."""
    out: list[ChatMessage] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = block["type"]
        if kind == "tool_result":
            text = _result_text(block.get("content"), f"{where}.content[{j}].content")
            if block.get("is_error") is True and not text.lower().startswith("error"):
                text = f"Error: {text}" if text else "Error"
            call_id = block.get("tool_use_id")
            if not isinstance(call_id, str) or not call_id:  # Anthropic's rule: a result names the call it answers
                raise bad_request(f"`{where}.content[{j}].tool_use_id` is required: the id of the tool_use it "
                                  "answers", f"{where}.content[{j}].tool_use_id")
            out.append(ChatMessage(role="tool", content=text, tool_call_id=call_id))
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, f"{where}.content[{j}]")}})
        elif kind in _TEXT_SOURCES:
            parts.append({"type": "text", "text": _TEXT_SOURCES[kind](block, f"{where}.content[{j}]")})
        else:
            parts.append({"type": "text", "text": _block_text(block, f"{where}.content", j)})
    if any(part["type"] == "image_url" for part in parts):
        out.append(ChatMessage(role="user", content=parts))
    elif parts:
        out.append(ChatMessage(role="user", content="\n".join(part["text"] for part in parts)))
    return out


def _source(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if not isinstance(source, dict):
        raise bad_request(f"{where}: a block's `source` must be an object", f"{where}.source", "invalid_type")
    return source


def _image_url(block: dict[str, Any], where: str) -> str:
    """An image block's source as a URL: `base64` data as a data: URL, a `url` source as it is."""
    source = _source(block, where)
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type') or 'image/png'};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise bad_request(f"{where}: an image's source must be base64 data or a url", f"{where}.source")


def _assistant_message(blocks: list[dict[str, Any]]) -> ChatMessage:
    texts, thoughts, calls = [], [], []
    for block in blocks:
        kind = block["type"]
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thoughts.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"), "arguments": arguments}})
    return ChatMessage(role="assistant", content="\n".join(texts) if texts or not calls else None,
                       tool_calls=calls or None, reasoning_content="\n".join(thoughts) or None)


def _result_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for j, block in enumerate(content):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "image":
                texts.append("[image]")  # a tool message carries text only
            elif kind in _TEXT_SOURCES:
                texts.append(_TEXT_SOURCES[kind](block, f"{where}[{j}]"))
            else:
                texts.append(_block_text(block, where, j))
        return "\n".join(texts)
    raise bad_request(f"{where} must be a string or a list of content blocks", where)


def _document_text(block: dict[str, Any], where: str) -> str:
    """A document's text (its title first, when it has one): a `text` source's data, a `content` source's
    text blocks; a 400 for the others (PDFs, files), which are not read here."""
    source = _source(block, where)
    if source.get("type") == "text" and isinstance(source.get("data"), str):
        text = source["data"]
    elif source.get("type") == "content" and isinstance(source.get("content"), (str, list)):
        content = source["content"]
        text = content if isinstance(content, str) else "\n".join(
            _block_text(b, f"{where}.source.content", k) for k, b in enumerate(content))
    else:
        raise bad_request(f"{where}: only text documents (source.type `text` or `content`) can be read here",
                          f"{where}.source")
    title = block.get("title")
    return f"{title}\n{text}" if isinstance(title, str) and title else text


def _search_result_text(block: dict[str, Any], where: str) -> str:
    """A search result (a RAG tool's answer, Anthropic's `search_result` block) as the model reads it: its
    title and source, then its text blocks."""
    content = block.get("content")
    if not isinstance(content, list):
        raise bad_request(f"{where}: a search result's `content` must be a list of text blocks", f"{where}.content")
    head = [v for v in (block.get("title"), block.get("source")) if isinstance(v, str) and v]
    return "\n".join(head + [_block_text(b, f"{where}.content", k) for k, b in enumerate(content)])


# User and tool-result blocks read as text, and how.
_TEXT_SOURCES = {"document": _document_text, "search_result": _search_result_text}


def _tools(tools: list[dict[str, Any]] | None, choice: dict[str, Any] | None):
    """(chat tools, chat tool_choice, parallel_tool_calls) of Anthropic's tools and tool_choice."""
    functions = []
    for i, tool in enumerate(tools or []):
        if isinstance(tool, dict) and tool.get("type") not in (None, "custom"):
            functions.append(client_tool_function(tool, i))
            continue
        if not isinstance(tool, dict) or not tool.get("name"):
            raise bad_request(f"tools[{i}]: a client tool needs a `name` (and an `input_schema`)", f"tools[{i}]")
        functions.append({"type": "function", "function": {
            "name": tool["name"], "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object", "properties": {}}}})
    if choice is None:
        return functions or None, None, None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise bad_request("`tool_choice.type` must be auto, any, tool or none", "tool_choice.type")
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice["type"]
    if kind == "tool":
        if not choice.get("name"):
            raise bad_request("`tool_choice` of type tool needs a `name`", "tool_choice.name")
        mapped: Any = {"type": "function", "function": {"name": choice["name"]}}
    else:
        mapped = {"auto": "auto", "any": "required", "none": "none"}[kind]
    return functions or None, mapped if functions else None, parallel
