"""Workers publishing on NATS, a frontend subscribed over ZMQ: nothing reaches the router.
It must say so (a WARNING, `/health`) and route on predicted caches instead of an index that
cannot fill. (Recovery, the first message clearing the flag: tests/router/test_silent_workers.py.)"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.procs import wait_until
from tests.fixtures.servers import etcd_server, nats_server  # noqa: F401 - fixtures
from tests.router.e2e_helpers import BLOCK, complete, nats_kv_cluster, route_info, tokens, worker_requests

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 8


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory, etcd_server, nats_server):
    with nats_kv_cluster(tmp_path_factory.mktemp("plane-mismatch"), tiny_model, etcd_server, nats_server,
                         frontend_env={"DYN_EVENT_PLANE": "zmq"}) as c:
        yield c


def test_workers_on_another_event_plane_are_reported_and_routed_by_prediction(cluster):
    assert route_info(cluster.base_url)["mode"] == "kv-events"  # the cards say they publish
    with ThreadPoolExecutor(6) as pool:  # at once: the least loaded worker differs, both are routed to
        list(pool.map(lambda i: complete(cluster.base_url, tokens(i, 4 * BLOCK), max_tokens=40), range(6)))
    assert all(worker_requests(w) > 0 for w in cluster.workers)
    wait_until(lambda: route_info(cluster.base_url)["mode"] == "approximate", 60,
               "the router to notice that nothing arrives from the workers")
    reason = route_info(cluster.base_url)["reason"]
    assert "zmq" in reason and "DYN_EVENT_PLANE" in reason, reason
    log = cluster.procs[-1].log_path.read_text()
    assert "has sent no KV events or load metrics over zmq" in log
    prefix = tokens(7, PREFIX_BLOCKS * BLOCK)
    before = [worker_requests(w) for w in cluster.workers]
    for i in range(4):  # predicted caches: a shared prefix keeps going where it went first
        complete(cluster.base_url, prefix + tokens(70 + i, 10))
    deltas = sorted(worker_requests(w) - b for w, b in zip(cluster.workers, before))
    assert deltas == [0.0, 4.0], deltas
