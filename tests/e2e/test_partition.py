"""A partitioned worker, not a killed one: the worker runs in its own network namespace
joined to the host by a veth pair, and the link is cut under streaming load. Its streams
migrate (the request plane's keep-alive notices the silent peer), it leaves discovery
when its etcd lease expires, and when the link returns it re-registers and serves again.
No client request fails. Needs root (network namespaces), as on the project's machines."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from dynamo.runtime.net import free_port
from tests.fixtures.load import Load
from tests.fixtures.procs import Cluster, Proc, http_get, metric_value, wait_until
from tests.fixtures.servers import ETCD_BIN, _etcd_healthy, require_binary, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


class Namespace:
    """`ip netns` + a veth pair: host side 10.x.y.1/30, namespace side 10.x.y.2/30."""

    def __init__(self) -> None:
        if os.geteuid() != 0:
            pytest.fail("network namespaces need root")
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_if, self.ns_if = f"dynp-{tag}", f"dph{tag}", f"dpn{tag}"
        octet = int(tag[:2], 16)
        self.host_ip, self.ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"

    def create(self) -> None:
        sh("ip", "netns", "add", self.name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.name)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        for cmd in (("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if), ("ip", "link", "set", self.ns_if, "up"),
                    ("ip", "link", "set", "lo", "up")):
            sh("ip", "netns", "exec", self.name, *cmd)

    def link(self, up: bool) -> None:
        sh("ip", "link", "set", self.host_if, "up" if up else "down")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=30)


class NsProc(Proc):
    """`python -m <module>` inside a network namespace."""

    def __init__(self, netns: str, module: str, args: list[str], env: dict[str, str], log_dir, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", module, *args],
                                      env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=log_dir.parent,
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)


def requests_served(host: str, port: int) -> float:
    text = http_get(f"http://{host}:{port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0.0


@pytest.fixture()
def netns():
    ns = Namespace()
    ns.create()
    try:
        yield ns
    finally:
        ns.delete()


def test_partitioned_worker_migrates_leaves_and_rejoins(tiny_model, tmp_path, netns):
    require_binary(ETCD_BIN)
    port, peer = free_port(), free_port()
    local, bridged = f"http://127.0.0.1:{port}", f"http://{netns.host_ip}:{port}"
    with open(tmp_path / "etcd.log", "wb") as log:
        etcd = subprocess.Popen([ETCD_BIN, "--name", "p", "--data-dir", str(tmp_path / "etcd"),
                                 "--listen-client-urls", f"{local},{bridged}", "--advertise-client-urls", local,
                                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                                 "--initial-cluster", f"p=http://127.0.0.1:{peer}"], stdout=log, stderr=subprocess.STDOUT)
    cluster = Cluster(tmp_path, tiny_model, "etcd", {"ETCD_ENDPOINTS": local, "DYN_TCP_RPC_HOST": "127.0.0.1"})
    load = None
    try:
        wait_until(lambda: _etcd_healthy(local), 30, "etcd")
        cluster.mocker("--speedup-ratio", "10")
        # The partitioned worker: reached through the veth, as another host would be.
        system_port = free_port()
        env = {**cluster.env, "ETCD_ENDPOINTS": bridged, "DYN_TCP_RPC_HOST": netns.ns_ip,
               "DYN_SYSTEM_PORT": str(system_port), "DYN_SYSTEM_HOST": netns.ns_ip}
        remote = NsProc(netns.name, "dynamo.mocker", ["--model-path", str(tiny_model), "--model-name", MODEL,
                                                      "--speedup-ratio", "10"], env, tmp_path, "partitioned")
        cluster.procs.append(remote)
        cluster.frontend("--migration-limit", "3")
        cluster.wait_workers(MODEL, 2)
        load = Load(cluster.base_url, clients=4, max_tokens=64, pause=0.02)
        load.start()
        load.progress(10, "load on both workers")

        netns.link(False)
        cluster.wait_workers(MODEL, 1, timeout=40)  # lease TTL 10 s + keep-alive period
        load.progress(10, "load continues on the other worker", timeout=60)
        assert remote.alive(), remote.log()

        netns.link(True)
        cluster.wait_workers(MODEL, 2, timeout=60)  # lease granted again, keys re-put
        served = requests_served(netns.ns_ip, system_port)
        load.progress(10, "load after the link returns")
        wait_until(lambda: requests_served(netns.ns_ip, system_port) > served, 60, "the rejoined worker serves")
        text = http_get(cluster.base_url + "/metrics")[1].decode()
        # Streams that were running on the cut-off worker moved (the keep-alive noticed the silence).
        assert (metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"})
                or 0) >= 1
    finally:
        if load is not None:
            load.finish()
        cluster.stop()
        stop(etcd)
    assert load.failures == [], load.failures[:5]
    assert "re-registering" in remote.log_path.read_text()
