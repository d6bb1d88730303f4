"""Local inhibition in `python -m dynamo.router`: after a worker behind the router service is
SIGKILLed (and stays in discovery until its lease expires), the service's `generate` keeps
answering every request from the live worker and tries the dead one only about once per
inhibition period, where a router with `DYN_INHIBITED_DURATION_SECS=0` tries it again and again."""

from __future__ import annotations

import asyncio
import time
import uuid

import msgspec
import pytest

from dynamo.llm.protocol import PreprocessedRequest, StopConditions, output_decoder, request_encoder
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.rp_client import RequestPlaneClient, StreamError
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until
from tests.router.e2e_helpers import BLOCK, MODEL, SMALL_KV, tokens

pytestmark = pytest.mark.e2e

ROUTER_PREFIX = "v1/instances/dynamo/kv-router/generate/"


async def _generate_for(kv_root: str, seconds: float) -> tuple[dict[int, int], int]:
    """Send small requests to each router service for `seconds`; (tokens per router address, requests)."""
    store = make_store("file", root=kv_root)
    await store.start()
    client = RequestPlaneClient()
    try:
        found = await store.get_prefix(ROUTER_PREFIX)
        addresses = [msgspec.json.decode(v)["transport"]["tcp"] for v in found.values()]
        assert len(addresses) == 2, addresses
        got, sent, end, i = {a: 0 for a in addresses}, 0, time.monotonic() + seconds, 0
        while time.monotonic() < end:
            for address in addresses:
                i += 1
                request = PreprocessedRequest(request_id=uuid.uuid4().hex, model=MODEL, token_ids=tokens(i, 40),
                                              stop_conditions=StopConditions(max_tokens=2, ignore_eos=True))
                stream = await client.open_stream(address, "generate", request_encoder.encode(request))
                got[address] += sum([len(output_decoder.decode(p).token_ids) async for p in stream])
                sent += 1
        return got, sent
    finally:
        await client.close()
        await store.close()


def skipped_dead_worker(router) -> int:
    return router.log().count("unreachable or draining")


def test_router_service_inhibits_a_killed_worker(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        workers = [c.mocker(*SMALL_KV) for _ in range(2)]
        routers = []
        for duration in ("5", "0"):
            port = free_port()
            router = c.start("dynamo.router", ["--endpoint", "dynamo.backend.generate", "--router-block-size",
                                               str(BLOCK)],
                             env={"DYN_INHIBITED_DURATION_SECS": duration, "DYN_SYSTEM_PORT": str(port)},
                             name=f"router-inhibit-{duration}")
            router.system_port = port  # type: ignore[attr-defined]
            routers.append(router)
        kv_root = str(c.tmp / "kv")
        asyncio.run(_wait_ready(kv_root))
        wait_until(lambda: _serves(kv_root), 60, "both router services to route to the workers")
        asyncio.run(_generate_for(kv_root, 2))
        workers[0].kill()
        got, sent = asyncio.run(_generate_for(kv_root, 6))  # well inside the 10 s lease
        assert all(n > 0 for n in got.values()) and sum(got.values()) == 2 * sent, (got, sent)
        inhibited, plain = (skipped_dead_worker(r) for r in routers)
        print(f"{sent} requests; dead worker tried: inhibition on {inhibited}, off {plain}")
        assert 1 <= inhibited <= 3, (inhibited, plain)
        assert plain > inhibited + 3, (inhibited, plain)
        text = http_get(f"http://127.0.0.1:{routers[0].system_port}/metrics")[1].decode()
        assert (metric_value(text, "dynamo_component_worker_inhibitions_total", {"reason": "cannot_connect"})
                or 0) >= 1
    finally:
        c.stop()


def _serves(kv_root: str) -> bool:
    try:
        asyncio.run(_generate_for(kv_root, 0.01))
        return True
    except StreamError:
        return False


async def _wait_ready(kv_root: str, timeout: float = 60) -> None:
    store = make_store("file", root=kv_root)
    await store.start()
    try:
        end = time.monotonic() + timeout
        while len(await store.get_prefix(ROUTER_PREFIX)) < 2 or len(
                await store.get_prefix("v1/instances/dynamo/backend/generate/")) < 2:
            assert time.monotonic() < end, "router services and workers not registered"
            await asyncio.sleep(0.2)
    finally:
        await store.close()
