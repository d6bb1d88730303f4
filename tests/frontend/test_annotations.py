"""nvext.annotations: which names a request lists (a 400 for anything but a list of strings) and how
an annotation is framed as a server-sent event, as NVIDIA Dynamo frames one (the name on an
`event:` line, the value's JSON on a comment line)."""

from __future__ import annotations

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
