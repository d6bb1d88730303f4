"""KV-aware routing with the event plane over a real `nats-server` (and etcd discovery)
instead of the brokerless ZMQ default."""

from __future__ import annotations

import pytest

from tests.fixtures.procs import metric_value, wait_until
from tests.fixtures.servers import etcd_server, nats_server  # noqa: F401 - fixtures
from tests.router.e2e_helpers import (
    BLOCK,
    cached_tokens,
    complete,
    metrics,
    nats_kv_cluster,
    route_info,
    tokens,
    wait_indexed,
    worker_requests,
)

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 8


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory, etcd_server, nats_server):
    with nats_kv_cluster(tmp_path_factory.mktemp("kv-nats"), tiny_model, etcd_server, nats_server) as c:
        yield c


def test_kv_events_over_nats_route_shared_prefixes_to_their_holder(cluster):
    assert route_info(cluster.base_url)["mode"] == "kv-events"
    wait_until(lambda: "KV events and load metrics over nats" in cluster.procs[-1].log_path.read_text(), 30,
               "the frontend to log its nats subscription")
    prefix = tokens(7, PREFIX_BLOCKS * BLOCK)
    before = [worker_requests(w) for w in cluster.workers]
    complete(cluster.base_url, prefix + tokens(70, 10))
    holder = [i for i, w in enumerate(cluster.workers) if worker_requests(w) > before[i]]
    assert len(holder) == 1
    wait_indexed(cluster.base_url, PREFIX_BLOCKS)
    before = [worker_requests(w) for w in cluster.workers]
    for i in range(3):
        assert cached_tokens(complete(cluster.base_url, prefix + tokens(71 + i, 10))) >= PREFIX_BLOCKS * BLOCK
    deltas = [worker_requests(w) - b for w, b in zip(cluster.workers, before)]
    assert deltas == [3.0 if i == holder[0] else 0.0 for i in range(2)]
    text = metrics(cluster.base_url)
    assert metric_value(text, "dynamo_component_kv_cache_events_applied_total",
                        {"event_type": "stored", "status": "ok"}) > 0
