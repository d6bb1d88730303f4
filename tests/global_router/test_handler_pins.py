"""The global router and worker pins: a frontend pins a request to the worker it saw (a reasoning budget's
continuation, a client's own `backend_instance_id`), and the worker it saw is one of the global router's faces. A
pool's router knows only its own workers and refuses that id, so pins naming a face are dropped on the way; any
other pin, and every other byte, goes on unchanged."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dynamo.global_router.handler import GlobalRouter
from dynamo.global_router.pools import parse_plan
from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, request_decoder, request_encoder
from tests.global_router.test_pools import AGG

FACE = 0xFACE


def router() -> GlobalRouter:
    gr = GlobalRouter(parse_plan(AGG), None, None, CollectorRegistry())  # type: ignore[arg-type]
    gr.faces = {FACE, FACE + 1}
    return gr


def payload(**hints) -> bytes:
    return request_encoder.encode(PreprocessedRequest(request_id="r", model="m", token_ids=[1, 2, 3],
                                                      routing=RoutingHints(priority=2.0, dp_rank=1, **hints)))


def test_a_pin_naming_a_face_is_dropped_and_the_rest_kept():
    _, _, sent = router().choose("agg", payload(backend_instance_id=FACE, prefill_worker_id=FACE + 1,
                                                decode_worker_id=42))
    request = request_decoder.decode(sent)
    hints = request.routing
    assert (hints.backend_instance_id, hints.prefill_worker_id, hints.decode_worker_id) == (None, None, 42)
    assert (hints.priority, request.token_ids, request.request_id) == (2.0, [1, 2, 3], "r")
    assert hints.dp_rank is None  # the face's rank went with its pin


def test_a_rank_stays_with_a_pin_that_stays():
    _, _, sent = router().choose("agg", payload(prefill_worker_id=FACE, decode_worker_id=42))
    hints = request_decoder.decode(sent).routing
    assert (hints.prefill_worker_id, hints.decode_worker_id, hints.dp_rank) == (None, 42, 1)


def test_other_requests_go_on_byte_for_byte():
    for raw in (payload(), payload(backend_instance_id=42)):
        assert router().choose("agg", raw)[2] is raw
