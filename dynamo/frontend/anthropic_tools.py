"""Anthropic-defined client tools on `/v1/messages`: tools an application declares by `type` and `name`
alone (`{"type": "bash_20250124", "name": "bash"}`, `{"type": "text_editor_20250728", "name":
"str_replace_based_edit_tool"}`) and runs itself, Claude knowing their input schemas by heart. A model
served here knows nothing of them, so each becomes a function tool with the input schema the
application will execute (the one Anthropic documents for that tool version), and the model's calls come
back as `tool_use` blocks under the tool's name, as the application expects.

Tools Anthropic's servers run (web search, web fetch, code execution) and computer use (screenshots in,
pointer actions out: nothing a text model served here can drive) are refused with a 400 naming them."""

from __future__ import annotations

import re
from typing import Any

from dynamo.frontend.errors import bad_request

_VERSION = re.compile(r"^(bash|text_editor)_(\d{8})$")
# text_editor versions from this date on have no `undo_edit`, take `insert_text` (named str_replace_based_edit_tool)
_EDITOR_WITHOUT_UNDO = "20250429"

_BASH = {
    "description": "Run a command in a persistent bash shell and see its output. State (working directory, "
                   "variables) is kept between calls; `restart` starts a fresh shell.",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "string", "description": "The bash command to run (required unless restarting)."},
        "restart": {"type": "boolean", "description": "Restart the shell instead of running a command."}}},
}


def _editor(older: bool) -> dict[str, Any]:
    """The text editor's schema: the older versions (`str_replace_editor`) also undo, and take the text an
    `insert` adds in `new_str`; the newer ones (`str_replace_based_edit_tool`) in `insert_text`, as Claude
    writes their calls (and applications built on them read them)."""
    commands = ["view", "create", "str_replace", "insert"] + (["undo_edit"] if older else [])
    inserted = "new_str" if older else "insert_text"
    texts = ({"new_str": {"type": "string", "description": "`str_replace`: the replacement; `insert`: the text."}}
             if older else
             {"new_str": {"type": "string", "description": "`str_replace`: the replacement."},
              "insert_text": {"type": "string", "description": "`insert`: the text to insert."}})
    return {
        "description": "View, create and edit text files. `view` shows a file with line numbers (or lists a "
                       "directory); `create` writes a new file; `str_replace` replaces one exact, unique "
                       f"occurrence of `old_str` with `new_str`; `insert` puts `{inserted}` after line `insert_line` "
                       "(0: at the top)" + ("; `undo_edit` reverts the last edit of a file." if older else "."),
        "parameters": {"type": "object", "required": ["command", "path"], "properties": {
            "command": {"type": "string", "enum": commands},
            "path": {"type": "string", "description": "Absolute path of the file or directory."},
            "file_text": {"type": "string", "description": "`create`: the new file's content."},
            "old_str": {"type": "string", "description": "`str_replace`: the exact text to replace."},
            **texts,
            "insert_line": {"type": "integer", "description": "`insert`: the line after which to insert."},
            "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                           "description": "`view`: first and last line, 1-based; -1 as last reads to the end."}}},
    }


def client_tool_function(tool: dict[str, Any], i: int) -> dict[str, Any]:
    """The chat function tool an Anthropic-defined client tool (`tools[i]`, with its `type`) is served as;
    a 400 naming it for a tool that cannot run here."""
    kind = tool.get("type")
    match = _VERSION.match(kind) if isinstance(kind, str) else None
    if match is None or not isinstance(tool.get("name"), str) or not tool["name"]:
        raise bad_request(f"tools[{i}]: tool type {kind!r} cannot be used here: only client tools (name, "
                          "input_schema), bash and text_editor; Anthropic's server tools and computer use are "
                          "not served", f"tools[{i}].type", "unsupported_parameter")
    family, version = match.groups()
    spec = _BASH if family == "bash" else _editor(version < _EDITOR_WITHOUT_UNDO)
    return {"type": "function", "function": {"name": tool["name"], **spec}}
