"""The NATS event plane going away under a KV-routing frontend (real nats-server, real
etcd): the router says it is approximate (/health, `dynamo_frontend_router_mode`, log)
while requests keep being served, and when NATS returns it re-syncs every worker's KV
state (events sent during the outage are lost) and is exact again."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from dynamo.runtime.net import free_port
from tests.fixtures.procs import Cluster, metric_value, wait_until
from tests.fixtures.servers import NATS_BIN, _nats_ready, etcd_server, require_binary, stop  # noqa: F401
from tests.router.e2e_helpers import BLOCK, MODEL, SMALL_KV, complete, metrics, route_info, tokens, wait_indexed

pytestmark = pytest.mark.e2e

PREFIX_BLOCKS = 4


class NatsServer:
    """A nats-server on a fixed port that can be stopped and started again."""

    def __init__(self, workdir: str) -> None:
        require_binary(NATS_BIN)
        self.port = free_port()
        self.log_path = os.path.join(workdir, "nats.log")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([NATS_BIN, "-a", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                         stderr=subprocess.STDOUT)
        wait_until(lambda: _nats_ready(self.port), 30, "nats-server")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


def mode_metric(base_url: str, mode: str) -> float | None:
    return metric_value(metrics(base_url), "dynamo_frontend_router_mode", {"model": MODEL, "mode": mode})


def resyncs(base_url: str) -> float:
    return metric_value(metrics(base_url), "dynamo_frontend_router_kv_resyncs_total", {"status": "ok"}) or 0.0


def test_nats_outage_makes_the_router_approximate_then_exact_again(tiny_model, tmp_path, etcd_server):
    nats = NatsServer(tempfile.mkdtemp(dir=tmp_path))
    nats.start()
    env = {"ETCD_ENDPOINTS": etcd_server, "NATS_SERVER": nats.url, "DYN_EVENT_PLANE": "nats"}
    cluster = Cluster(tmp_path, tiny_model, "etcd", env)
    try:
        for _ in range(2):
            cluster.mocker(*SMALL_KV)
        frontend = cluster.frontend("--router-mode", "kv")
        cluster.wait_workers(MODEL, 2)
        url = cluster.base_url
        wait_until(lambda: route_info(url).get("mode") == "kv-events", 30, "exact KV routing")
        complete(url, tokens(1, PREFIX_BLOCKS * BLOCK) + tokens(50, 8))
        wait_indexed(url, PREFIX_BLOCKS)

        nats.stop()
        wait_until(lambda: route_info(url).get("mode") == "approximate", 30, "router reports approximate")
        assert "event plane unreachable" in route_info(url)["reason"]
        assert mode_metric(url, "approximate") == 1.0 and mode_metric(url, "kv-events") == 0.0
        assert "KV routing mode approximate" in frontend.log_path.read_text()
        # Served meanwhile; the KV events of these requests are lost with the server.
        lost_prefix = tokens(2, 2 * PREFIX_BLOCKS * BLOCK)
        for i in range(3):
            assert complete(url, lost_prefix + tokens(60 + i, 8))["usage"]["completion_tokens"] == 4
        before = resyncs(url)

        nats.start()
        wait_until(lambda: route_info(url).get("mode") == "kv-events", 60, "router exact again")
        assert mode_metric(url, "kv-events") == 1.0
        wait_until(lambda: resyncs(url) >= before + 2, 30, "both workers re-synced")
        # The blocks stored during the outage came back through the re-sync, not through events.
        wait_indexed(url, 2 * PREFIX_BLOCKS)
        assert route_info(url)["workers_needing_resync"] == []
        assert all(p.alive() for p in cluster.procs)
    finally:
        cluster.stop()
        nats.stop()
