"""DYN_NAMESPACE_WORKER_SUFFIX end to end (NVIDIA Dynamo's worker and router both append it): a mocker given
DYN_NAMESPACE and the suffix registers in '{namespace}-{suffix}', a frontend told that namespace serves through
it, and a standalone router given the same two variables finds it and routes a request to it."""

from __future__ import annotations

import asyncio
import json
import uuid

import msgspec
import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, output_decoder, request_encoder
from dynamo.router.service import OverlapScores, RouteQuery
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e

NAMESPACE, SUFFIX = "default-mocker-agg", "abc123"
SUFFIXED = f"{NAMESPACE}-{SUFFIX}"
ENV = {"DYN_NAMESPACE": NAMESPACE, "DYN_NAMESPACE_WORKER_SUFFIX": SUFFIX}


async def _router_call(kv_root: str, endpoint: str, payload: bytes) -> list[bytes]:
    """One request to the router's `endpoint`, found where the router serves: DYN_NAMESPACE, unsuffixed."""
    store = make_store("file", root=kv_root)
    await store.start()
    try:
        found = await store.get_prefix(f"v1/instances/{NAMESPACE}/router/{endpoint}/")
    finally:
        await store.close()
    assert found, f"the router's {endpoint} is not registered in {NAMESPACE}"
    address = msgspec.json.decode(next(iter(found.values())))["transport"]["tcp"]
    client = RequestPlaneClient()
    try:
        async with asyncio.timeout(30):
            return [p async for p in await client.open_stream(address, endpoint, payload)]
    finally:
        await client.close()


def router_scores(c: Cluster) -> list:
    (raw,) = asyncio.run(_router_call(str(c.tmp / "kv"), "get_overlap_scores",
                                      msgspec.msgpack.encode(RouteQuery(token_ids=[1]))))
    return msgspec.msgpack.decode(raw, type=OverlapScores).scores


def test_a_suffixed_worker_is_found_by_a_frontend_and_a_router_given_the_suffix(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        worker = c.mocker("--speedup-ratio", "10", env=ENV)
        router = c.start("dynamo.router", ["--endpoint", f"{NAMESPACE}.backend.generate"], env=ENV, name="router")
        c.frontend("--namespace", SUFFIXED)
        wait_until(lambda: f"Worker {SUFFIXED}.backend.generate initialized" in worker.log(), 120,
                   "the worker to register in the suffixed namespace")
        c.wait_workers("tiny", 1)
        instances = json.loads(http_get(c.base_url + "/health")[1])["instances"]
        assert {i["namespace"] for i in instances if i.get("model") == "tiny"} == {SUFFIXED}, instances
        answer = c.openai_client().completions.create(model="tiny", prompt="hello", max_tokens=3)
        assert answer.usage.completion_tokens == 3

        wait_until(lambda: len(router_scores(c)) == 1, 60, f"the router to see the worker\n{router.log()}")
        request = PreprocessedRequest(request_id=uuid.uuid4().hex, model="tiny", token_ids=[5, 6, 7, 8],
                                      stop_conditions=StopConditions(max_tokens=2, ignore_eos=True))
        outputs = asyncio.run(_router_call(str(c.tmp / "kv"), "generate", request_encoder.encode(request)))
        assert sum(len(output_decoder.decode(p).token_ids) for p in outputs) == 2
    finally:
        c.stop()
