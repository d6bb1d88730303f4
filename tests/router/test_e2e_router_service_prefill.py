"""`python -m dynamo.router` in front of a prefill pool, end to end (what a global router sends a disaggregated
request's prefill to): two prefill mockers' cards make it a prefill pool, so a prefill pinned by
`prefill_worker_id` goes to that worker whatever decode worker the request also names, and its metrics count
prefills, not aggregated requests."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dynamo.llm.protocol import PreprocessedRequest, RoutingHints, StopConditions, request_encoder
from dynamo.runtime import records
from dynamo.runtime.discovery.base import make_store
from tests.fixtures.procs import Cluster, free_port, metric_value, wait_until
from tests.router.e2e_helpers import SMALL_KV, metrics, tokens, worker_requests
from tests.router.test_e2e_router_service import call

pytestmark = pytest.mark.e2e

ENDPOINT = "dynamo.prefill.generate"


async def _worker_ids(kv_root: str) -> list[int]:
    store = make_store("file", root=kv_root)
    await store.start()
    try:
        found = await store.get_prefix(records.endpoint_prefix(records.INSTANCES, records.parse_endpoint(ENDPOINT)))
        return sorted(records.instance_id_from_key(key) for key in found)
    finally:
        await store.close()


def prefill(pin: int, seed: int) -> bytes:
    """What the frontend sends a prefill worker (disagg.py), pinned: its prefill here, its decode elsewhere."""
    request = PreprocessedRequest(request_id=f"{uuid.uuid4().hex}:prefill", model="tiny", token_ids=tokens(seed, 40),
                                  prefill_only=True, stop_conditions=StopConditions(max_tokens=1),
                                  routing=RoutingHints(prefill_worker_id=pin, decode_worker_id=0xDEADBEEF))
    return request_encoder.encode(request)


def test_a_prefill_pools_router_honours_prefill_pins_and_counts_prefills(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    try:
        workers = [c.mocker("--endpoint", f"dyn://{ENDPOINT}", "--disaggregation-mode", "prefill", *SMALL_KV)
                   for _ in range(2)]
        port = free_port()
        c.router = c.start("dynamo.router", ["--endpoint", ENDPOINT], env={"DYN_SYSTEM_PORT": str(port)},
                           name="router")
        c.kv_root = str(c.tmp / "kv")
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: len(_workers(metrics(url))) == 2, 60, "the service to see both workers")
        assert set(_workers(metrics(url)).values()) == {"prefill"}
        assert "routing them as a prefill pool" in c.router.log()
        (pinned, _) = asyncio.run(_worker_ids(c.kv_root))
        before = [worker_requests(w) for w in workers]
        for seed in range(3):
            assert call(c, "generate", prefill(pinned, seed))
        served = sorted(worker_requests(w) - b for w, b in zip(workers, before))
        assert served == [0, 3]  # all on the pinned worker
        text = metrics(url)
        assert metric_value(text, "dynamo_component_router_input_sequence_tokens_count", {"phase": "prefill"}) == 3
        assert metric_value(text, "dynamo_component_router_input_sequence_tokens_count", {"phase": "aggregated"}) \
            is None
    finally:
        c.stop()


def _workers(text: str) -> dict[str, str]:
    """The service's workers (its load gauge's) -> their worker_type label."""
    def label(line: str, name: str) -> str:
        return line.split(f'{name}="')[1].split('"')[0]
    return {label(line, "worker_id"): label(line, "worker_type") for line in text.splitlines()
            if line.startswith("dynamo_component_worker_active_decode_blocks{")}
