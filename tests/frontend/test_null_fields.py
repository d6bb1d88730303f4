"""An explicit `null` on an optional boolean request field means its default, as OpenAI's API reads it
(clients that build bodies from optional values send it): never a 400. Decoded from raw JSON, since the
openai client leaves None fields out."""

from __future__ import annotations

import json
import typing

import msgspec
import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend import openai, responses_request
from dynamo.frontend.openai import ChatCompletionRequest, CompletionRequest, StreamOptions, _Common, decode_request
from dynamo.frontend.responses_request import ResponsesRequest, decode_responses

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}

# (request kind, field, its default)
COMMON = [("stream", False), ("include_stop_str_in_output", False), ("ignore_eos", False),
          ("return_tokens_as_token_ids", False)]
CASES = ([("chat", name, default) for name, default in COMMON]
         + [("completion", name, default) for name, default in COMMON]
         + [("chat", "add_generation_prompt", True), ("chat", "continue_final_message", False),
            ("completion", "echo", False)])


def decoded(kind: str, **fields):
    body = {**(CHAT if kind == "chat" else COMPLETION), **fields}
    return decode_request(json.dumps(body).encode(), kind)


@pytest.mark.parametrize(("kind", "name", "default"), CASES)
def test_null_is_the_default(kind, name, default):
    assert getattr(decoded(kind, **{name: None}), name) is default
    assert getattr(decoded(kind), name) is default
    assert getattr(decoded(kind, **{name: not default}), name) is (not default)  # a value sent still counts


@pytest.mark.parametrize("kind", ["chat", "completion"])
def test_null_stream_options_flags_are_their_defaults(kind):
    req = decoded(kind, stream=True, stream_options={"include_usage": None, "continuous_usage_stats": None})
    assert req.stream_options.include_usage is False and req.stream_options.continuous_usage_stats is False
    req = decoded(kind, stream_options={"include_usage": True})
    assert req.stream_options.include_usage is True


def test_a_value_of_another_type_is_still_refused():
    with pytest.raises(ApiError) as info:
        decoded("chat", stream="yes")
    assert (info.value.status, info.value.param) == (400, "stream")


def test_a_request_with_nulls_encodes_as_one_without_them():
    """Nulls turned defaults are left out when the request is encoded (batch journal, stored requests)."""
    req = decoded("chat", stream=None, ignore_eos=None, add_generation_prompt=None)
    assert msgspec.json.decode(msgspec.json.encode(req)) == CHAT


def test_a_request_built_in_code_gets_the_defaults_for_none_too():
    req = ChatCompletionRequest(model="m", messages=[], stream=None, add_generation_prompt=None)
    assert (req.stream, req.add_generation_prompt) == (False, True)


@pytest.mark.parametrize(("name", "default"), [("stream", False), ("store", True), ("background", False)])
def test_responses_null_is_the_default(name, default):
    body = {"model": "m", "input": "hi", name: None}
    req = decode_responses(json.dumps(body).encode())
    assert getattr(req, name) is default
    assert req.to_chat().stream is False


# The least body each request struct with such fields decodes from; a struct of these modules that gains one and is
# not listed here fails `test_every_null_boolean_field_is_walked`.
LEAST_BODIES = {StreamOptions: {}, _Common: {"model": "m"}, ChatCompletionRequest: CHAT,
                CompletionRequest: COMPLETION, ResponsesRequest: {"model": "m", "input": "hi"}}


def null_default_fields(cls: type) -> list[tuple[str, bool]]:
    """(name, default) of each `bool | None` field of `cls` whose default is a bool: what a null must turn into."""
    return [(f.name, f.default) for f in msgspec.structs.fields(cls)
            if set(typing.get_args(f.type)) == {bool, type(None)} and isinstance(f.default, bool)]


def test_every_null_boolean_field_is_walked():
    structs = {c for module in (openai, responses_request) for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, msgspec.Struct) and c.__module__ == module.__name__}
    assert {c for c in structs if null_default_fields(c)} == set(LEAST_BODIES)


@pytest.mark.parametrize(("cls", "name", "default"), [(cls, name, default) for cls in LEAST_BODIES
                                                      for name, default in null_default_fields(cls)])
def test_each_boolean_field_null_alone_decodes_to_its_default(cls, name, default):
    """Each such field null on its own (the others left out): the struct's null checks and its NULL_IS_DEFAULT list,
    written out apart, both have to name it, or it stays None."""
    decoded = msgspec.json.decode(json.dumps({**LEAST_BODIES[cls], name: None}), type=cls)
    assert getattr(decoded, name) is default
