"""The `sla` throughput loop's inputs from a real Prometheus scraping a real frontend:
Dynamo's queries return the request count and averages while traffic flows, and once it
stops the count is 0 (not unknown, not NaN), so the planner scales down to the minimum
instead of "skipping adjustment" (Dynamo issue #6985)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from dynamo.planner.config import PlannerConfig
from dynamo.planner.connectors.base import make_connector
from dynamo.planner.connectors.virtual import VirtualOrchestrator
from dynamo.planner.observe import FpmCollector
from dynamo.planner.planner import Planner
from dynamo.planner.prometheus import PrometheusClient, observe, router_waiting_query, waiting_query
from dynamo.runtime.discovery.base import make_store
from tests.deploy.helpers import chat
from dynamo.runtime.rp_client import RequestPlaneClient
from tests.fixtures.procs import Cluster, free_port
from tests.router.test_e2e_router_service_wait import generate, router_addresses
from tests.planner.prometheus_server import PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("prom")
    cluster = Cluster(tmp, tiny_model)
    prom = None
    try:
        cluster.frontend("--router-mode", "kv")  # the KV router's hit-rate histogram reaches the planner too
        cluster.mocker("--speedup-ratio", "10")
        cluster.wait_workers("tiny", 1)
        prom = PrometheusServer(tmp / "prometheus", [f"127.0.0.1:{cluster.http_port}"], "dynamo")
        yield cluster, prom, tmp
    finally:
        if prom is not None:
            prom.stop()
        cluster.stop()


def send(cluster: Cluster, n: int) -> None:
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda i: chat(cluster.http_port, "tiny", f"question {i} " * 20, max_tokens=16),
                                range(n)))
    assert all(r["usage"]["completion_tokens"] == 16 for r in replies)


async def planner_at(cfg: PlannerConfig, store, client: PrometheusClient, replicas: int
                     ) -> tuple[Planner, VirtualOrchestrator]:
    """A planner on the virtual connector whose decode pool is at `replicas` (the scale acknowledged)."""
    conn = make_connector(cfg, store=store)
    await conn.start()
    await conn.scale({"decode": replicas})
    orch = VirtualOrchestrator(store, cfg.namespace)
    await orch.ack((await orch.next_decision(5))["decision_id"])
    return Planner(cfg, conn, FpmCollector(store, cfg), client), orch


async def wait_observation(client: PrometheusClient, window: int, check, deadline_s: float = 60):
    deadline = time.monotonic() + deadline_s
    while True:
        obs = await observe(client, window, "tiny", "dynamo")
        if check(obs) or time.monotonic() > deadline:
            return obs
        await asyncio.sleep(1)


async def test_traffic_observation_then_zero_when_traffic_stops(stack):
    cluster, prom, tmp = stack
    client = PrometheusClient(prom.url)
    try:
        # The frontend creates a model's request series at 0 once the model is registered: before any
        # request Prometheus already holds them (demand 0, not unknown), so increase() counts the very
        # first requests (a series born at 1 by its first request would lose that one).
        first = await wait_observation(client, 60, lambda o: o.num_req is not None)
        assert first.num_req == 0, first
        await asyncio.sleep(2)  # another scrape at 0
        send(cluster, 12)
        obs = await wait_observation(client, 30, lambda o: (o.num_req or 0) >= 11.5 and o.osl is not None)
        assert 11 <= obs.num_req <= 20, obs  # increase() extrapolates towards the window's edges
        assert obs.osl == pytest.approx(16) and obs.isl > 20 and obs.ttft_ms > 0 and obs.itl_ms > 0, obs
        assert obs.kv_hit_rate is not None and 0 <= obs.kv_hit_rate < 0.5, obs  # distinct prompts: few hits
        quiet = await wait_observation(client, 3, lambda o: o.num_req == 0, deadline_s=30)
        assert quiet.num_req == 0 and quiet.isl is None and quiet.ttft_ms is None, quiet
        # a model nobody serves: demand unknown, never a made-up 0
        assert (await observe(client, 60, "no-such-model", "dynamo")).num_req is None
    finally:
        await client.close()


async def test_sla_throughput_tick_scales_to_the_minimum_when_traffic_stops(stack):
    cluster, prom, tmp = stack
    store = make_store("file", root=str(tmp / "kv"))
    await store.start()
    client = PrometheusClient(prom.url)
    try:
        cfg = PlannerConfig(environment="virtual", model_name="tiny", namespace="dynamo", mode="agg",
                            optimization_target="sla", enable_load_scaling=False,
                            throughput_adjustment_interval_seconds=3, load_predictor="constant")
        planner, orch = await planner_at(cfg, store, client, 3)
        await wait_observation(client, 3, lambda o: o.num_req == 0, deadline_s=30)
        await planner.throughput_tick()
        last = planner.decisions[-1]
        assert (last.role, last.current, last.target) == ("decode", 3, 1), last
        assert "no traffic" in last.reason
        assert (await orch.next_decision(5))["num_decode_workers"] == 1
    finally:
        await client.close()
        await store.close()


@contextlib.asynccontextmanager
async def planner_at_zero(tmp, scraped: str, namespace: str):
    """A virtual-connector planner whose decode pool is at zero (min_endpoint 0), reading a real Prometheus that
    scrapes `scraped` (labelled as its PodMonitor would); checked to stay at zero while nothing waits."""
    prom = PrometheusServer(tmp / "prometheus", [scraped], namespace)
    store = make_store("file", root=str(tmp / "kv"))
    client = PrometheusClient(prom.url)
    try:
        await store.start()
        cfg = PlannerConfig(environment="virtual", model_name="tiny", namespace=namespace, mode="agg",
                            optimization_target="throughput", min_endpoint=0)
        planner, orch = await planner_at(cfg, store, client, 0)
        await planner.load_tick()
        assert planner.decisions[-1].target == 0  # nothing waits: stays at zero
        yield planner, orch, client
    finally:
        await client.close()
        await store.close()
        prom.stop()


async def scaled_from_zero(planner, orch) -> None:
    await planner.load_tick()
    last = planner.decisions[-1]
    assert (last.role, last.current, last.target) == ("decode", 0, 1), last
    assert "waiting for a worker" in last.reason
    assert (await orch.next_decision(5))["num_decode_workers"] == 1


async def test_a_pool_at_zero_scales_up_for_requests_the_frontend_holds(tmp_path_factory, tiny_model):
    """min_endpoint 0: no engine reports load at zero replicas; the requests a frontend holds for the model
    (--wait-for-workers-secs) are the demand, read from Prometheus, and the pool comes back to 1."""
    tmp = tmp_path_factory.mktemp("zero")
    cluster = Cluster(tmp, tiny_model)
    try:
        cluster.frontend("--wait-for-workers-secs", "30", "--model-name", "tiny")  # no worker at all yet
        async with planner_at_zero(tmp, f"127.0.0.1:{cluster.http_port}", "dynamo") as (planner, orch, client):
            body = {"model": "tiny", "prompt": "wake up", "max_tokens": 2}
            threading.Thread(target=lambda: httpx.post(cluster.base_url + "/v1/completions", json=body, timeout=40),
                             daemon=True).start()
            deadline = time.monotonic() + 30
            while (await client.scalar(waiting_query("tiny", "dynamo")) or 0) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            await scaled_from_zero(planner, orch)
    finally:
        cluster.stop()


async def test_a_pool_at_zero_scales_up_for_requests_its_router_holds(tmp_path_factory, tiny_model):
    """A global router's pool: its frontend sees the global router up and holds nothing; the pool's router
    service (--wait-for-workers-secs) holds the request, and the pool's planner reads that from Prometheus."""
    tmp = tmp_path_factory.mktemp("zero-router")
    cluster = Cluster(tmp, tiny_model)
    caller = RequestPlaneClient()
    try:
        port = free_port()
        cluster.start("dynamo.router", ["--endpoint", "pool.backend.generate", "--wait-for-workers-secs", "30"],
                      env={"DYN_SYSTEM_PORT": str(port)}, name="pool-router")
        async with planner_at_zero(tmp, f"127.0.0.1:{port}", "pool") as (planner, orch, client):
            address = (await router_addresses(str(tmp / "kv"), 1, "pool"))[0]
            held = asyncio.ensure_future(generate(caller, address))
            deadline = time.monotonic() + 30
            while (await client.scalar(router_waiting_query("pool")) or 0) < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            assert not held.done()
            await scaled_from_zero(planner, orch)
            held.cancel()
            await asyncio.gather(held, return_exceptions=True)
    finally:
        await caller.close()
        cluster.stop()
