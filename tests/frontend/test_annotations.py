"""nvext.annotations: which names a request lists (a 400 for anything but a list of strings) and how
an annotation is framed as a server-sent event, as NVIDIA Dynamo frames one (the name on an
`event:` line, the value's JSON on a comment line)."""

from __future__ import annotations

import msgspec
import pytest

from dynamo.frontend import annotations
from dynamo.frontend.errors import ApiError


def test_the_names_listed_unknown_ones_kept_for_the_caller_to_ignore():
    assert annotations.requested(None) == frozenset()
    assert annotations.requested({}) == frozenset()
    assert annotations.requested({"annotations": ["query_instance_id", "later"]}) == {"query_instance_id", "later"}


@pytest.mark.parametrize("bad", ["request_id", [1], {"request_id": True}, [None]])
def test_anything_but_a_list_of_names_is_a_400(bad):
    with pytest.raises(ApiError) as err:
        annotations.requested({"annotations": bad})
    assert err.value.status == 400 and err.value.param == "nvext.annotations"


def test_an_annotation_is_an_event_line_and_its_json_on_a_comment_line():
    assert annotations.event("request_id", "chatcmpl-1") == b'event: request_id\n: "chatcmpl-1"\n\n'


def test_the_routing_answer_names_the_workers_then_the_prompt():
    events = annotations.routing_answer(7587888160958038784, [1, 2])
    assert events == b'event: worker_instance_id\n: "7587888160958038784"\n\nevent: token_data\n: [1,2]\n\n'
    assert annotations.routing_nvext(5, None, [3]) == {"worker_id": {"decode_worker_id": 5}, "token_ids": [3]}
    assert annotations.routing_nvext(5, 9, [3])["worker_id"] == {"prefill_worker_id": 9, "decode_worker_id": 5}


@pytest.fixture
def pipeline(tiny_model):
    from dynamo.llm.model_card import build_card
    from dynamo.llm.preprocessor import ModelPipeline
    from dynamo.llm.token_cache import TokenCache

    return ModelPipeline(build_card(tiny_model, name="tiny", block_size=16), TokenCache(1 << 20))


def _events(raw: bytes) -> dict:
    out = {}
    for part in raw.decode().split("\n\n")[:-1]:
        name, comment = part.split("\n")
        out[name.removeprefix("event: ")] = msgspec.json.decode(comment.removeprefix(": "))
    return out


def test_a_chat_stream_opens_with_its_rendered_prompt_and_its_ids_as_dynamo_writes_them(pipeline):
    from dynamo.frontend.openai import decode_request
    from dynamo.frontend.preparation import chat_text, prompt_ids

    req = decode_request(msgspec.json.encode({"model": "tiny", "stream": True, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi\nthere"}]}), "chat")
    ids = prompt_ids(pipeline, req)
    both = frozenset({"formatted_prompt", "token_ids"})
    events = _events(annotations.prompt_events(both, pipeline, req, ids, tokenized_here=True))
    assert events["formatted_prompt"] == chat_text(pipeline, req) and "hi\nthere" in events["formatted_prompt"]
    assert msgspec.json.decode(events["token_ids"]) == ids  # the array's text inside a JSON string
    # The gateway that sent the ids has them; nothing was asked for; a unary answer has no events.
    assert set(_events(annotations.prompt_events(both, pipeline, req, ids, tokenized_here=False))) == \
        {"formatted_prompt"}
    assert annotations.prompt_events(frozenset({"request_id"}), pipeline, req, ids, True) == b""
    unary = decode_request(msgspec.json.encode({"model": "tiny", "messages": [{"role": "user", "content": "x"}]}),
                           "chat")
    assert annotations.prompt_events(both, pipeline, unary, ids, True) == b""


def test_a_completion_has_them_for_a_text_prompt_only(pipeline):
    from dynamo.frontend.openai import decode_request

    both = frozenset({"formatted_prompt", "token_ids"})
    text = decode_request(b'{"model": "tiny", "stream": true, "prompt": "Once upon"}', "completion")
    assert _events(annotations.prompt_events(both, pipeline, text, [5, 6], True)) == \
        {"formatted_prompt": "Once upon", "token_ids": "[5,6]"}
    for prompt in ("[5, 6]", '["a", "b"]'):
        req = decode_request(b'{"model": "tiny", "stream": true, "prompt": %s}' % prompt.encode(), "completion")
        assert annotations.prompt_events(both, pipeline, req, [5, 6], True) == b""
