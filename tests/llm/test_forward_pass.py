"""The forward-pass-metrics contract: msgpack round trip with Dynamo's field names, and the
relay over a real event plane (ZMQ, file discovery): thinning, and the idle heartbeat a
late subscriber still receives."""

from __future__ import annotations

import asyncio

import msgspec

from dynamo.llm.forward_pass import (FPM_TOPIC, ForwardPassMetrics, FpmRelay, QueuedRequests, ScheduledRequests,
                                     fpm_decoder, fpm_encoder, variance)
from dynamo.runtime.discovery.base import make_store
from dynamo.runtime.event_plane.base import create_subscriber


def test_round_trip_and_field_names():
    fpm = ForwardPassMetrics(worker_id="1a", dp_rank=1, counter_id=7, wall_time=0.012,
                             scheduled_requests=ScheduledRequests(num_prefill_requests=2, sum_prefill_tokens=900,
                                                                  var_prefill_length=25.0, sum_prefill_kv_tokens=64,
                                                                  num_decode_requests=3, sum_decode_kv_tokens=3000),
                             queued_requests=QueuedRequests(num_prefill_requests=1, sum_prefill_tokens=400))
    assert fpm_decoder.decode(fpm_encoder.encode(fpm)) == fpm
    as_dict = msgspec.msgpack.decode(fpm_encoder.encode(fpm))
    assert as_dict["version"] == 1 and as_dict["worker_id"] == "1a"
    assert set(as_dict["scheduled_requests"]) == {
        "num_prefill_requests", "sum_prefill_tokens", "var_prefill_length", "sum_prefill_kv_tokens",
        "num_decode_requests", "sum_decode_kv_tokens", "var_decode_kv_tokens"}
    assert set(as_dict["queued_requests"]) == {
        "num_prefill_requests", "sum_prefill_tokens", "var_prefill_length", "num_decode_requests",
        "sum_decode_kv_tokens", "var_decode_kv_tokens"}
    assert ForwardPassMetrics(worker_id="x").idle and not fpm.idle
    assert variance([2, 4]) == 1.0 and variance([5]) == 0.0


async def test_relay_thins_and_heartbeats_over_the_event_plane(tmp_path):
    store = make_store("file", root=str(tmp_path / "kv"))
    await store.start()
    relay = await FpmRelay.create(store, "ns", "backend", store.lease_id, max_rate=20, heartbeat_s=0.3)
    sub = await create_subscriber(None, store, "ns", "backend", FPM_TOPIC)
    got: list[ForwardPassMetrics] = []

    async def read():
        async for _, payload in sub:
            got.append(fpm_decoder.decode(payload))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(1.0)  # the subscriber connects (ZMQ slow joiner)
        for i in range(200):  # a burst far above 20/s: thinned, the newest always goes out
            relay.push(ForwardPassMetrics(worker_id="w", counter_id=i + 1, wall_time=0.001,
                                          scheduled_requests=ScheduledRequests(num_decode_requests=1)))
            await asyncio.sleep(0.002)
        relay.push(ForwardPassMetrics(worker_id="w", counter_id=201))  # idle heartbeat
        await asyncio.sleep(1.2)
        busy = [f for f in got if not f.idle]
        assert 2 <= len(busy) < 60, len(busy)
        assert relay.pushed == 201 and relay.published < 201
        idle = [f for f in got if f.idle]
        assert len(idle) >= 3 and all(f.counter_id == 201 for f in idle)  # repeated while quiet
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await sub.close()
        await relay.close()
        await store.close()
