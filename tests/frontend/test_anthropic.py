"""Anthropic Messages requests as chat requests (frontend/anthropic.py): blocks to messages, tools and
tool_choice to functions, Claude Code's billing line stripped, 400s that name the field, and errors in
Anthropic's shape."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.frontend.anthropic import decode_messages, error_body, overflow_message, strip_billing_preamble
from dynamo.frontend.errors import ApiError, bad_prompt, model_not_found
from dynamo.frontend.validation import validate_chat
from dynamo.llm.preprocessor import ContextOverflow, PreprocessError


def chat(body: dict, strip: bool = False, counting: bool = False):
    return decode_messages(msgspec.json.encode({"model": "m", "max_tokens": 10, **body})).to_chat(strip, counting)


def test_a_conversation_of_blocks_becomes_chat_messages():
    req = chat({"system": [{"type": "text", "text": "Rules."}, {"type": "text", "text": "More rules."}], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                     {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                                     "data": "a plain file"}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "Hmm.", "signature": "s"},
                                          {"type": "text", "text": "Calling."},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                                     {"type": "text", "text": "Thanks"}]}]})
    roles = [m.role for m in req.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert req.messages[0].content == "Rules.\nMore rules."
    assert req.messages[1].content.startswith("Look:\n") and "a plain file" in req.messages[1].content
    assistant = req.messages[2]
    assert assistant.content == "Calling." and assistant.reasoning_content == "Hmm."
    assert assistant.tool_calls == [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    assert (req.messages[3].tool_call_id, req.messages[3].content) == ("t1", "42")
    assert req.messages[4].content == "Thanks"


def test_a_last_assistant_message_is_a_prefill_the_answer_continues():
    """Anthropic's prefill: the reply carries on from the assistant's text (no turn closed, none opened)."""
    for content in ("PREFILL", [{"type": "text", "text": "PREFILL"}]):
        req = chat({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]})
        assert (req.continue_final_message, req.generation_prompt()) == (True, False)
        assert req.messages[-1].content == "PREFILL"
    validate_chat(req)  # the chat path's own rules for a prefill hold
    plain = chat({"messages": [{"role": "user", "content": "hi"}]})
    assert (plain.continue_final_message, plain.generation_prompt()) == (False, True)
    # Nothing to continue: tool calls wait for their results; blank text opens a new turn as before.
    call = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    for content in ([{"type": "text", "text": "Calling."}, call], "  "):
        req = chat({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": content}]})
        assert (req.continue_final_message, req.generation_prompt()) == (False, True)


def test_a_tool_result_marked_as_an_error_says_so():
    def result(**block):
        req = chat({"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                                                  **block}]}]})
        return req.messages[0].content

    assert result(content="file not found", is_error=True) == "Error: file not found"
    assert result(content=[{"type": "text", "text": "exit 1"}], is_error=True) == "Error: exit 1"
    assert result(content="Error: missing `path`", is_error=True) == "Error: missing `path`"  # not said twice
    assert result(is_error=True) == "Error"
    assert result(content="file not found", is_error=False) == "file not found"


def test_tools_choices_and_sampling_map_one_to_one():
    tool = {"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {"x": {}}}}
    req = chat({"messages": [{"role": "user", "content": "hi"}], "tools": [tool], "stop_sequences": ["END"],
                "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": True},
                "temperature": 0.5, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}})
    assert req.tools == [{"type": "function", "function": {"name": "f", "description": "d",
                                                           "parameters": tool["input_schema"]}}]
    assert req.tool_choice == {"type": "function", "function": {"name": "f"}} and req.parallel_tool_calls is False
    assert (req.stop, req.temperature, req.top_k, req.max_tokens) == (["END"], 0.5, 5, 10)
    assert req.chat_template_kwargs == {"enable_thinking": True}
    for anthropic_choice, chat_choice in (("any", "required"), ("auto", "auto"), ("none", "none")):
        got = chat({"messages": [{"role": "user", "content": "hi"}], "tools": [tool],
                    "tool_choice": {"type": anthropic_choice}})
        assert got.tool_choice == chat_choice


def test_claude_codes_billing_line_is_stripped_only_when_asked():
    header = "x-anthropic-billing-header: cc_version=2.1.80; cch=abc12;"
    body = {"system": [{"type": "text", "text": header}, {"type": "text", "text": "You are Claude Code."}],
            "messages": [{"role": "user", "content": "hi"}]}
    assert chat(body, strip=True).messages[0].content == "You are Claude Code."
    assert header in chat(body).messages[0].content
    assert strip_billing_preamble(f"{header}\nKeep me.\nx-anthropic-billing-header: again") == "Keep me.\n"


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": [{"type": "thinking", "thinking": "x"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f1"}}]}]},
     "messages[0].content[0].source"),  # an uploaded file cannot be fetched here: refused, not dropped
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "tools[0].type"),  # Anthropic's servers run it: nothing here can
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "computer_20250124", "name": "computer",
                                                                  "display_width_px": 1024}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{"input_schema": {}}]}, "tools[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "base64", "data": "JVBE",
                                                                                 "media_type": "application/pdf"}}]}]},
     "messages[0].content[0].source"),
    ({"messages": [{"role": "user", "content": "hi"}], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"messages": [{"role": "user", "content": "hi"}], "system": [{"type": "image"}]}, "system[0]"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"},
                   {"role": "user", "content": [{"type": "tool_result", "content": "42"}]}]},
     "messages[2].content[0].tool_use_id"),  # which call does it answer? (its own index, not the chat turn's)
])
def test_what_cannot_be_served_is_a_400_naming_the_field(body, param):
    with pytest.raises(ApiError) as err:
        chat(body)
    assert err.value.status == 400 and err.value.param == param


def test_images_become_image_url_parts_where_they_stand():
    """The chat path then judges them (a model that reads no images answers 400, not a silent drop)."""
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/AA"}},
        {"type": "text", "text": "with"},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/b.png"}}]}]}
    assert chat(body).messages[0].content == [
        {"type": "text", "text": "Compare"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AA"}},
        {"type": "text", "text": "with"}, {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}}]
    text_only = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert chat(text_only).messages[0].content == "a\nb"


def test_count_tokens_needs_no_max_tokens():
    body = msgspec.json.encode({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert decode_messages(body).to_chat(False, counting=True).max_tokens is None
    with pytest.raises(ApiError):
        decode_messages(body).to_chat(False)


def test_errors_are_in_anthropics_shape_with_our_fields_kept():
    body = error_body(model_not_found("m"))
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert body["error"]["param"] == "model" and "m" in body["error"]["message"]
    assert error_body(ApiError(529, "busy"))["error"]["type"] == "overloaded_error"
    assert error_body(ApiError(502, "engine"))["error"]["type"] == "api_error"


def test_context_overflows_are_worded_as_anthropic_words_them_for_its_clients_to_parse():
    output = overflow_message(ContextOverflow(1900, 2048, max_tokens=500))
    assert output == ("input length and `max_tokens` exceed context limit: 1900 + 500 > 2048, "
                      "decrease input length or `max_tokens` and try again")
    assert overflow_message(ContextOverflow(5000, 2048)) == "prompt is too long: 5000 tokens > 2048 maximum"
    # A prompt of exactly the context fits no output: the prompt's maximum is one less.
    assert overflow_message(ContextOverflow(2048, 2048)) == "prompt is too long: 2048 tokens > 2047 maximum"


def test_an_overflow_keeps_its_numbers_from_the_preprocessor_to_the_anthropic_body():
    exc = PreprocessError("This model's maximum context length is 2048 tokens...", "max_tokens",
                          "context_length_exceeded", ContextOverflow(1900, 2048, 500))
    error = bad_prompt(exc)
    assert error.body()["error"]["message"].startswith("This model's maximum")  # OpenAI's wording kept there
    body = error_body(error)["error"]
    assert body["message"].startswith("input length and `max_tokens` exceed context limit: 1900 + 500 > 2048")
    assert body["type"] == "invalid_request_error" and body["code"] == "context_length_exceeded"
    assert body["param"] == "max_tokens"


def test_anthropic_defined_client_tools_are_functions_with_the_schemas_their_applications_run():
    req = chat({"messages": [{"role": "user", "content": "fix the bug"}],
                "tools": [{"type": "bash_20250124", "name": "bash"},
                          {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool", "max_characters": 9},
                          {"type": "text_editor_20250124", "name": "str_replace_editor"},
                          {"name": "lint", "input_schema": {"type": "object", "properties": {}}}],
                "tool_choice": {"type": "tool", "name": "str_replace_based_edit_tool"}})
    functions = {t["function"]["name"]: t["function"] for t in req.tools}
    assert list(functions) == ["bash", "str_replace_based_edit_tool", "str_replace_editor", "lint"]
    assert set(functions["bash"]["parameters"]["properties"]) == {"command", "restart"}
    editor = functions["str_replace_based_edit_tool"]["parameters"]
    assert editor["required"] == ["command", "path"]
    assert editor["properties"]["command"]["enum"] == ["view", "create", "str_replace", "insert"]
    assert {"old_str", "new_str", "file_text", "insert_line", "view_range"} <= set(editor["properties"])
    assert "insert_text" in editor["properties"]  # what Claude's calls of this version carry an insert's text in
    older = functions["str_replace_editor"]["parameters"]["properties"]
    assert "undo_edit" in older["command"]["enum"] and "insert_text" not in older
    assert req.tool_choice == {"type": "function", "function": {"name": "str_replace_based_edit_tool"}}
    validate_chat(req)


def test_search_results_and_documents_are_read_as_text_also_inside_tool_results():
    result = {"type": "search_result", "source": "https://docs.example/rivers", "title": "Rivers",
              "content": [{"type": "text", "text": "The Loire is long."}], "citations": {"enabled": True}}
    document = {"type": "document", "title": "Notes", "source": {"type": "content", "content": [
        {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}}
    req = chat({"messages": [
        {"role": "user", "content": [result, {"type": "text", "text": "Which river?"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "x"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [result, document]}]}]})
    assert req.messages[0].content == "Rivers\nhttps://docs.example/rivers\nThe Loire is long.\nWhich river?"
    assert req.messages[2].role == "tool"
    assert req.messages[2].content == "Rivers\nhttps://docs.example/rivers\nThe Loire is long.\nNotes\nfirst\nsecond"


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
          "additionalProperties": False}


@pytest.mark.parametrize("field", [{"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
                                   {"output_format": {"type": "json_schema", "schema": SCHEMA}}])
def test_structured_output_holds_the_engine_to_the_schema_as_chats_json_schema(field):
    """`output_config.format` (what `client.messages.parse` sends) and the beta's `output_format` are chat's
    response_format json_schema: the worker gets the schema as its guided decoding."""
    req = chat({"messages": [{"role": "user", "content": "weather?"}], **field})
    assert req.response_format["type"] == "json_schema" and req.response_format["json_schema"]["schema"] == SCHEMA
    validate_chat(req)
    wire = req.to_request([1, 2, 3], "r", "m", 100, [5])
    assert wire.sampling_options.guided_decoding.json == SCHEMA
    assert chat({"messages": [{"role": "user", "content": "hi"}], "output_config": {"effort": "low"}}) \
        .response_format is None


@pytest.mark.parametrize("extra, param", [
    ({"output_config": {"format": {"type": "json_object"}}}, "output_config.format.type"),
    ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
    ({"output_format": {"type": "json_schema", "schema": []}}, "output_format.schema"),
    ({"output_format": {"type": "json_schema", "schema": SCHEMA},
      "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}, "output_format"),
])
def test_a_structured_output_that_cannot_be_held_to_is_a_400_naming_it(extra, param):
    with pytest.raises(ApiError) as err:
        chat({"messages": [{"role": "user", "content": "hi"}], **extra})
    assert (err.value.status, err.value.param) == (400, param)


def test_structured_output_with_a_prefill_is_a_400():
    """The schema binds the whole answer, and a prefill has already written its start."""
    with pytest.raises(ApiError) as err:
        chat({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": '{"ci'}],
              "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
    assert (err.value.status, err.value.param) == (400, "output_config.format")
