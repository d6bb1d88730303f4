"""The router service's `best_worker_id` in both forms (router/service.py): ours, a `RouteQuery` map
answered with a `BestWorker`, and NVIDIA Dynamo 1.6.1's, whose handler takes the prompt's bare
token-id list and answers with the bare worker id. The payload's shape (msgpack map or array) says
which form a caller uses."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from dynamo.router.selection import Selection
from dynamo.router.service import BestWorker, BestWorkerQuery, RouteQuery, RouterService
from dynamo.runtime.rp_server import HandlerError
from dynamo.runtime.wire import ErrorCode
from dynamo.router.kv_router import NoWorkers

query_decoder = msgspec.msgpack.Decoder(BestWorkerQuery)  # what the endpoint decodes its payloads to


class _Router:
    """Stands for the KV router: records what it was asked, picks worker 0xab, rank 1, 3 blocks cached."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.asked: list[tuple[list[int], dict]] = []
        self.fail = fail

    def select(self, token_ids, **kw) -> Selection:
        self.asked.append((list(token_ids), kw))
        if self.fail is not None:
            raise self.fail
        return Selection(worker_id=0xAB, dp_rank=1, overlap_blocks=3, required_blocks=4)


def service(router: _Router) -> RouterService:
    class _Service(RouterService):
        pass

    _Service.router = router  # type: ignore[assignment]  # the policy's router, without a runtime
    return _Service.__new__(_Service)


def answer(svc: RouterService, payload: bytes) -> list[bytes]:
    async def run() -> list[bytes]:
        return [item async for item in svc.best_worker_id(query_decoder.decode(payload), None)]  # type: ignore[arg-type]
    return asyncio.run(run())


def test_dynamos_bare_token_ids_get_the_bare_worker_id():
    router = _Router()
    (raw,) = answer(service(router), msgspec.msgpack.encode([5, 6, 7, 8]))
    assert msgspec.msgpack.decode(raw) == 0xAB
    assert router.asked == [([5, 6, 7, 8], {"lora_name": None, "override": None, "cache_salt": None,
                                            "media": None})]


def test_our_query_still_gets_a_best_worker():
    router = _Router()
    query = RouteQuery(token_ids=[1, 2], lora_name="a", cache_salt="s", router_config_override={"router_temperature": 0.5})
    (raw,) = answer(service(router), msgspec.msgpack.encode(query))
    assert msgspec.msgpack.decode(raw, type=BestWorker) == BestWorker(worker_id=0xAB, dp_rank=1, overlap_blocks=3)
    assert router.asked[0][1]["lora_name"] == "a" and router.asked[0][1]["cache_salt"] == "s"
    assert router.asked[0][1]["override"] == {"router_temperature": 0.5}


def test_no_worker_is_the_same_error_in_either_form():
    for payload in (msgspec.msgpack.encode([1]), msgspec.msgpack.encode(RouteQuery(token_ids=[1]))):
        with pytest.raises(HandlerError) as exc:
            answer(service(_Router(NoWorkers("ns.backend.generate"))), payload)
        assert exc.value.code == ErrorCode.NO_WORKERS


@pytest.mark.parametrize("payload", [msgspec.msgpack.encode("tokens"), msgspec.msgpack.encode([1.5]),
                                     msgspec.msgpack.encode({"lora_name": "a"})])
def test_anything_else_does_not_decode(payload):
    with pytest.raises(msgspec.ValidationError):  # the endpoint answers bad_request
        query_decoder.decode(payload)
