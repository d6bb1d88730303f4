"""Request identity in the frontend (request_log.py): the client's x-dynamo-request-id, W3C
traceparent, and the wire ids built from them."""

from __future__ import annotations

import uuid

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.request_log import adopt_client_id, error_type, start_trace, trace_id_of
from dynamo.runtime.logs import RequestEvents

RID = "0b6c7e5a-3f0e-4c8e-9a51-2d9c1f1a7e42"


def scope(**headers: str) -> dict:
    return {"headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


async def _send(message: dict) -> None:
    return None


def traced(s: dict):
    trace, _ = start_trace(RequestEvents(jsonl=False), s, _send)
    return trace


def test_the_clients_request_id_is_taken_written_canonically():
    s = scope(x_dynamo_request_id=RID.upper())
    trace = traced(s)
    adopt_client_id(trace, s)
    assert trace.request_id == RID and trace.client_id
    assert s["dynamo.trace"] is trace


def test_without_a_header_the_request_gets_a_fresh_uuid():
    s = scope()
    trace = traced(s)
    adopt_client_id(trace, s)
    assert uuid.UUID(trace.request_id) and not trace.client_id
    assert trace.wire_id() == trace.request_id  # fresh: unique already


@pytest.mark.parametrize("bad", ["NOT-A-VALID-UUID", "", "1234"])
def test_a_request_id_that_is_not_a_uuid_is_a_400(bad):
    s = scope(x_dynamo_request_id=bad)
    trace = traced(s)
    with pytest.raises(ApiError) as exc:
        adopt_client_id(trace, s)
    assert exc.value.status == 400 and "must be a valid UUID" in exc.value.message


def test_a_clients_id_sent_twice_gives_distinct_wire_ids_that_contain_it():
    s = scope(x_dynamo_request_id=RID)
    trace = traced(s)
    adopt_client_id(trace, s)
    first, second = trace.wire_id(), trace.wire_id()
    assert first != second and first.startswith(RID) and second.startswith(RID)


def test_the_trace_id_comes_from_a_valid_traceparent():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id_of(scope(traceparent=parent)) == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize("parent", ["00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero: invalid
                                    "garbage", "00-4bf92f35-00f067aa0ba902b7-01"])
def test_an_invalid_traceparent_gets_a_fresh_trace_id(parent):
    made = trace_id_of(scope(traceparent=parent))
    assert len(made) == 32 and int(made, 16) and made not in parent


@pytest.mark.parametrize("status, kind", [(404, "not_found"), (400, "invalid_request"), (529, "overloaded"),
                                          (504, "timeout"), (502, "internal")])
def test_error_types_by_status(status, kind):
    assert error_type(status) == kind
