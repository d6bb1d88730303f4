"""A graceful stop passes through the relays as a stop: a caller that has what it needs (a stop string matched:
`ResponseStream.stop()`) ends a stream through the router service (`python -m dynamo.router`) or the global router
in front of it, and the worker behind ends it as `stopped`, counting no cancellation; a caller's kill (`cancel()`)
still reaches it as a cancellation. One mocker pool, its router and a global router, streams opened on the relays'
request-plane endpoints as a frontend opens them."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import msgspec
import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, request_encoder
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until
from tests.router.e2e_helpers import BLOCK

pytestmark = pytest.mark.e2e

MODEL = "tiny"
POOL = "stop_pool"
FRONT_NS = "stopfront"
PLAN = {
    "mode": "agg", "num_agg_pools": 1, "agg_pool_dynamo_namespaces": [POOL],
    "agg_pool_selection_strategy": {
        "ttft_min_ms": 0, "ttft_max_ms": 1000, "ttft_resolution": 1,
        "itl_min_ms": 0, "itl_max_ms": 1000, "itl_resolution": 1, "agg_pool_mapping": [[0]]},
}
# The relays' endpoints: (namespace, component, endpoint)
ROUTER_SERVICE = (POOL, "router", "generate")
GLOBAL_ROUTER = (FRONT_NS, "global_router", "generate")


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    # Real-time mocker: a long answer is still streaming when its caller ends it.
    c = Cluster(tmp_path_factory.mktemp("relay-stop"), tiny_model, "file", {"DYN_LOGGING_JSONL": "1"})
    try:
        c.worker = c.mocker("--endpoint", f"dyn://{POOL}.backend.generate", "--block-size", str(BLOCK),
                            "--speedup-ratio", "1")
        c.start("dynamo.router", ["--endpoint", f"{POOL}.backend.generate", "--router-block-size", str(BLOCK)],
                name="router")
        plan = c.tmp / "plan.json"
        plan.write_text(json.dumps(PLAN))
        c.start("dynamo.global_router", ["--config", str(plan), "--model-name", MODEL, "--model-path",
                                         str(tiny_model), "--namespace", FRONT_NS], name="global-router")
        wait_until(lambda: http_get(f"http://127.0.0.1:{c.worker.system_port}/metrics")[0] == 200, 60,
                   "the worker's /metrics")
        yield c
    finally:
        c.stop()


async def _address(cluster, eid: tuple[str, str, str]) -> str:
    store = make_store("file", root=str(cluster.tmp / "kv"))
    await store.start()
    try:
        for _ in range(300):
            found = await store.get_prefix("v1/instances/{}/{}/{}/".format(*eid))
            if found:
                return msgspec.json.decode(next(iter(found.values())))["transport"]["tcp"]
            await asyncio.sleep(0.2)
    finally:
        await store.close()
    raise AssertionError(f"{'.'.join(eid)} not registered")


async def _end_after_first_output(cluster, eid: tuple[str, str, str], how: str, rid: str) -> None:
    request = PreprocessedRequest(request_id=rid, model=MODEL, token_ids=list(range(100, 140)),
                                  stop_conditions=StopConditions(max_tokens=500, ignore_eos=True))
    address = await _address(cluster, eid)
    client = RequestPlaneClient()
    try:
        for _ in range(300):  # the relay may not have discovered the pool's worker yet (a loaded box: CI saw it)
            stream = await client.open_stream(address, eid[2], request_encoder.encode(request))
            try:
                await stream.__anext__()
                break
            except StreamError as exc:
                if "no workers" not in str(exc):
                    raise
                await asyncio.sleep(0.2)
        stream.stop() if how == "stop" else stream.cancel()
        await asyncio.sleep(0.2)  # the Cancel frame on its way before the connection closes
    finally:
        await client.close()


def worker_cancellations(cluster) -> float:
    text = http_get(f"http://127.0.0.1:{cluster.worker.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_cancellation_total", {"dynamo_endpoint": "generate"}) or 0.0


def worker_end(cluster, rid: str) -> dict:
    """The worker's "request completed" line of request `rid`."""
    def done() -> list[dict]:
        lines = [json.loads(line) for line in cluster.worker.log_path.read_text(errors="replace").splitlines()
                 if rid in line]
        return [e for e in lines if e.get("message") == "request completed"]
    wait_until(lambda: done(), 60, f"the worker's last line of {rid}")
    [line] = done()
    return line


@pytest.mark.parametrize("relay", [ROUTER_SERVICE, GLOBAL_ROUTER], ids=["router-service", "global-router"])
@pytest.mark.parametrize(("how", "status", "counted"), [("stop", "stopped", 0), ("cancel", "cancelled", 1)])
def test_the_relay_ends_the_workers_stream_as_its_caller_ended_it(cluster, relay, how, status, counted):
    before = worker_cancellations(cluster)
    rid = uuid.uuid4().hex
    asyncio.run(_end_after_first_output(cluster, relay, how, rid))
    line = worker_end(cluster, rid)
    assert line["output_tokens"] < 500  # the caller ended it, through the relay
    assert (line["level"], line["status"]) == ("INFO", status)
    # The server counts a cancellation as the stream's task ends, just after the handler's last line.
    wait_until(lambda: worker_cancellations(cluster) >= before + counted, 30, "the worker's count")
    time.sleep(0.5)  # a count that would come (a stop taken for a kill) has come by now
    assert worker_cancellations(cluster) == before + counted
