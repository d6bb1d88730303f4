"""`python -m dynamo.router`'s `best_worker_id` asked as NVIDIA Dynamo 1.6.1's standalone router is
asked, end to end: a bare token-id list answered with the bare worker id, the same worker our
`RouteQuery` form names, next to two mocker workers (one holding the prompt's prefix)."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, output_decoder, request_encoder
from dynamo.router.service import BestWorker, OverlapScores, RouteQuery
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.procs import Cluster, wait_until
from tests.router.e2e_helpers import BLOCK, MODEL, SMALL_KV, tokens

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 6


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("router-service-dynamo-form"), tiny_model, "file")
    try:
        for _ in range(2):
            c.mocker(*SMALL_KV)
        c.router = c.start("dynamo.router", ["--endpoint", "dynamo.backend.generate"],  # type: ignore[attr-defined]
                           name="router")
        c.kv_root = str(c.tmp / "kv")  # type: ignore[attr-defined]
        yield c
    finally:
        c.stop()


async def _call(cluster, endpoint: str, payload: bytes) -> list[bytes]:
    store = make_store("file", root=cluster.kv_root)
    await store.start()
    try:
        prefix = f"v1/instances/dynamo/router/{endpoint}/"
        for _ in range(150):
            if found := await store.get_prefix(prefix):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"router endpoint {endpoint} not registered:\n{cluster.router.log()}")
        address = msgspec.json.decode(next(iter(found.values())))["transport"]["tcp"]
    finally:
        await store.close()
    client = RequestPlaneClient()
    try:
        return [p async for p in await client.open_stream(address, endpoint, payload)]
    finally:
        await client.close()


def call(cluster, endpoint: str, payload: bytes) -> list[bytes]:
    return asyncio.run(_call(cluster, endpoint, payload))


def overlap_scores(cluster, prompt: list[int]) -> OverlapScores:
    (raw,) = call(cluster, "get_overlap_scores", msgspec.msgpack.encode(RouteQuery(token_ids=prompt)))
    return msgspec.msgpack.decode(raw, type=OverlapScores)


def test_bare_token_ids_get_the_bare_id_of_the_worker_our_query_names(cluster):
    wait_until(lambda: len(overlap_scores(cluster, [1]).scores) == 2, 60, "the router to see both workers")
    prefix = tokens(41, PREFIX_BLOCKS * BLOCK)
    request = PreprocessedRequest(request_id=uuid.uuid4().hex, model=MODEL, token_ids=prefix + tokens(42, 8),
                                  stop_conditions=StopConditions(max_tokens=2, ignore_eos=True))
    outputs = [output_decoder.decode(p) for p in call(cluster, "generate", request_encoder.encode(request))]
    assert sum(len(o.token_ids) for o in outputs) == 2
    prompt = prefix + tokens(43, 40)
    wait_until(lambda: max(s.overlap_blocks for s in overlap_scores(cluster, prompt).scores) >= PREFIX_BLOCKS, 90,
               "the router to index the prefix")
    holder = max(overlap_scores(cluster, prompt).scores, key=lambda s: s.overlap_blocks).worker_id

    (bare,) = call(cluster, "best_worker_id", msgspec.msgpack.encode(prompt))  # Dynamo's form
    assert msgspec.msgpack.decode(bare) == holder  # an int, not a map
    (ours,) = call(cluster, "best_worker_id", msgspec.msgpack.encode(RouteQuery(token_ids=prompt)))
    best = msgspec.msgpack.decode(ours, type=BestWorker)
    assert (best.worker_id, best.overlap_blocks) == (holder, PREFIX_BLOCKS)
    # Nothing was booked by asking: the bare form gives the same answer again.
    assert msgspec.msgpack.decode(call(cluster, "best_worker_id", msgspec.msgpack.encode(prompt))[0]) == holder
