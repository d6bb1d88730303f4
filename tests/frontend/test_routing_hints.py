"""Routing hints from nvext and headers: what pins a request and what orders the router queue,
headers over the body, and malformed hints as 400s that name the field."""

from __future__ import annotations

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.routing_hints import routing_hints
from dynamo.llm.protocol import RoutingHints


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def test_none_when_nothing_is_given():
    assert routing_hints(None, []) is None
    assert routing_hints({"guided_json": {}}, h(content_type="application/json")) is None


def test_nvext_fields():
    hints = routing_hints({"backend_instance_id": 7, "prefill_worker_id": 9,
                           "agent_hints": {"priority": 2.5, "strict_priority": 1, "osl": 100}}, [])
    assert hints == RoutingHints(backend_instance_id=7, prefill_worker_id=9, priority=2.5, strict_priority=1)


def test_headers_override_the_body_and_dynamo_spellings_win():
    hints = routing_hints({"backend_instance_id": 7, "agent_hints": {"priority": 1}},
                          h(x_worker_instance_id="8", x_dynamo_worker_instance_id="12", X_Prefill_Instance_Id="5",
                            x_dp_rank="1", x_dynamo_request_priority="-3", x_dynamo_request_strict_priority="2"))
    assert hints == RoutingHints(backend_instance_id=12, prefill_worker_id=5, dp_rank=1, priority=-3.0,
                                 strict_priority=2)


@pytest.mark.parametrize("nvext, headers, param", [
    ({"backend_instance_id": "abc"}, [], "nvext.backend_instance_id"),
    ({"backend_instance_id": -1}, [], "nvext.backend_instance_id"),
    ({"decode_worker_id": True}, [], "nvext.decode_worker_id"),
    ({"agent_hints": [1]}, [], "nvext.agent_hints"),
    ({"agent_hints": {"priority": "high"}}, [], "nvext.agent_hints.priority"),
    ({"agent_hints": {"strict_priority": 1.5}}, [], "nvext.agent_hints.strict_priority"),
    (None, h(x_dynamo_request_priority="nan"), "x-dynamo-request-priority"),
    (None, h(x_prefill_instance_id="0x10"), "x-prefill-instance-id"),
])
def test_malformed_hints_are_400s_naming_the_field(nvext, headers, param):
    with pytest.raises(ApiError) as info:
        routing_hints(nvext, headers)
    assert info.value.status == 400 and info.value.param == param
