"""Request identity in the frontend (request_log.py): the client's x-dynamo-request-id and x-request-id,
W3C traceparent, and the wire ids built from them."""

from __future__ import annotations

import io
import logging
import uuid

import pytest

from dynamo.frontend.request_log import adopt_client_id, echo_request_id, start_trace, trace_id_of
from dynamo.runtime.logs import RequestEvents

RID = "0b6c7e5a-3f0e-4c8e-9a51-2d9c1f1a7e42"


def scope(**headers: str) -> dict:
    return {"headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


async def _send(message: dict) -> None:
    return None


def traced(s: dict, events: RequestEvents | None = None):
    trace, _ = start_trace(events or RequestEvents(jsonl=False), s, _send)
    return trace


def text_events() -> tuple[RequestEvents, io.StringIO]:
    stream = io.StringIO()
    logger = logging.getLogger("test.request_log")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers[:], logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    return RequestEvents(jsonl=False, logger=logger), stream


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
def test_a_request_id_that_is_not_a_uuid_is_ignored_with_a_warning_as_in_dynamo(bad):
    s = scope(x_dynamo_request_id=bad, x_request_id="client-7")
    events, stream = text_events()
    trace = traced(s, events)
    made = trace.request_id
    adopt_client_id(trace, s)
    assert trace.request_id == made and not trace.client_id  # the request goes on under its own id
    assert stream.getvalue() == (f"WARNING x-dynamo-request-id header must be a valid UUID, got: {bad} "
                                 f"request_id={made} trace_id={trace.trace_id} x_request_id=client-7\n")


async def test_the_clients_x_request_id_is_echoed_on_the_response():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)
    echoing = echo_request_id(scope(x_request_id="abc-1"), send)
    await echoing({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await echoing({"type": "http.response.body", "body": b"x"})
    assert sent[0]["headers"] == [(b"content-type", b"text/plain"), (b"x-request-id", b"abc-1")]
    assert sent[1] == {"type": "http.response.body", "body": b"x"}
    assert echo_request_id(scope(), send) is send  # none sent: nothing added, nothing wrapped


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


def test_every_request_line_carries_the_clients_x_request_id():
    events, stream = text_events()
    trace = traced(scope(x_request_id="mine"), events)
    trace.received("m", "completions", "unary")
    trace.completed()
    lines = stream.getvalue().splitlines()
    assert [line.split(" request_id")[0] for line in lines] == ["INFO request received", "INFO request completed"]
    assert all("x_request_id=mine" in line for line in lines)


def test_a_client_that_left_before_its_run_began_is_logged_as_cancelled():
    """The ConnectionError of a client that hung up while its request waited for a worker."""
    events, stream = text_events()
    trace = traced(scope(), events)
    trace.received("m", "completions", "unary")
    trace.completed(None, ConnectionError("client disconnected while waiting for a worker"))
    lines = stream.getvalue().splitlines()
    assert [line.split(" request_id")[0] for line in lines] == \
        ["INFO request received", "WARNING request cancelled by client", "INFO request completed"]
    assert "status=cancelled" in lines[-1] and "error_type=cancelled" in lines[-1]
