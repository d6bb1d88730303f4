"""Discovery outages with real etcd under streaming load: with etcd down, requests to the
workers the frontend knows keep succeeding and every process stays up; when etcd comes
back (even with its data lost) leases are granted again and keys re-put, and a worker
started during the outage registers. With a 3-member cluster, killing any one member
changes nothing a client sees."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from dynamo.runtime.net import free_port
from tests.fixtures.load import Load
from tests.fixtures.procs import Cluster, wait_until
from tests.fixtures.servers import ETCD_BIN, EtcdServer, _etcd_healthy, require_binary, stop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny"
OUTAGE_S = 20  # longer than the 10 s lease TTL


def all_alive(cluster) -> bool:
    return all(p.alive() for p in cluster.procs)


def two_workers_under_load(cluster) -> Load:
    """Two mockers behind a frontend on `cluster`, and a started `Load` streaming to them."""
    cluster.mocker("--speedup-ratio", "20")
    cluster.mocker("--speedup-ratio", "20")
    cluster.frontend()
    cluster.wait_workers(MODEL, 2)
    load = Load(cluster.base_url)
    load.start()
    return load


def test_etcd_outage_with_data_loss(tiny_model, tmp_path):
    etcd = EtcdServer(str(tmp_path))
    url = etcd.start()
    cluster = Cluster(tmp_path / "run", tiny_model, "etcd", {"ETCD_ENDPOINTS": url})
    (tmp_path / "run").mkdir()
    load = None
    try:
        load = two_workers_under_load(cluster)
        load.progress(6, "load running")
        etcd.stop()
        outage_start = time.monotonic()
        late = cluster.mocker("--speedup-ratio", "20", env={"DYN_ETCD_CONNECT_TIMEOUT_SECS": "120"})
        load.progress(10, "requests succeed during the outage", timeout=OUTAGE_S)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_start)))
        assert all_alive(cluster), [p.log() for p in cluster.procs if not p.alive()]
        assert cluster.worker_count(MODEL) == 2  # the frontend keeps what it knew
        etcd.start(wipe=True)  # back, but with every lease and key gone
        cluster.wait_workers(MODEL, 3, timeout=90)  # both re-registered, the late one registered
        load.progress(10, "load continues after etcd returns")
        assert late.alive()
    finally:
        if load is not None:
            load.finish()
        cluster.stop()
        etcd.stop()
    assert load.failures == [], load.failures


def test_etcd_back_empty_drops_no_live_worker(tiny_model, tmp_path):
    """etcd killed, its data dir wiped, restarted: the frontend's watches re-list before the
    worker has re-put its keys (it is frozen until then: the race lost for sure), yet the
    worker never leaves the router and no request fails (before: 503 no_workers)."""
    etcd = EtcdServer(str(tmp_path))
    url = etcd.start()
    cluster = Cluster(tmp_path / "run", tiny_model, "etcd", {"ETCD_ENDPOINTS": url})
    (tmp_path / "run").mkdir()
    load = None
    try:
        worker = cluster.mocker("--speedup-ratio", "20")
        frontend = cluster.frontend("--router-mode", "kv")
        cluster.wait_workers(MODEL, 1)
        load = Load(cluster.base_url, clients=2, max_tokens=2, pause=0.1)
        load.start()
        load.progress(5, "load running")
        worker.freeze()
        try:
            etcd.proc.kill()  # SIGKILL, then back on the same ports with nothing
            etcd.proc.wait(10)
            time.sleep(3)
            etcd.start(wipe=True)
            wait_until(lambda: any(s in frontend.log_path.read_text() for s in ("re-listed", *FLAPPED)), 60,
                       "the frontend re-listed")
        finally:
            worker.thaw()
        wait_until(lambda: "re-registering" in worker.log_path.read_text(), 60, "the worker re-registered")
        time.sleep(12)  # past the frontend's hold (its 10 s lease TTL): nothing left to report deleted
        load.progress(5, "load continues after etcd returns")
        assert cluster.worker_count(MODEL) == 1 and MODEL in cluster.models()
    finally:
        if load is not None:
            load.finish()
        cluster.stop()
        etcd.stop()
    log = frontend.log_path.read_text()
    assert not [s for s in FLAPPED if s in log], log[-3000:]
    assert load.failures == [], load.failures


FLAPPED = ("left the KV router", "no workers left")


class EtcdCluster:
    """Three etcd members on loopback ports; any one can be killed and restarted."""

    def __init__(self, workdir: str, size: int = 3) -> None:
        require_binary(ETCD_BIN)
        self.workdir = workdir
        self.names = [f"m{i}" for i in range(size)]
        self.client = {n: f"http://127.0.0.1:{free_port()}" for n in self.names}
        self.peer = {n: f"http://127.0.0.1:{free_port()}" for n in self.names}
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def endpoints(self) -> str:
        return ",".join(self.client[n] for n in self.names)

    def start(self, name: str) -> None:
        initial = ",".join(f"{n}={self.peer[n]}" for n in self.names)
        args = [ETCD_BIN, "--name", name, "--data-dir", os.path.join(self.workdir, name),
                "--listen-client-urls", self.client[name], "--advertise-client-urls", self.client[name],
                "--listen-peer-urls", self.peer[name], "--initial-advertise-peer-urls", self.peer[name],
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "dyn-test"]
        log = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start_all(self) -> None:
        for name in self.names:
            self.start(name)
        wait_until(lambda: all(self.healthy(n) for n in self.names), 60, "3-member etcd healthy")

    def healthy(self, name: str) -> bool:
        try:
            return _etcd_healthy(self.client[name])
        except OSError:
            return False

    def kill(self, name: str) -> None:
        self.procs[name].kill()
        self.procs[name].wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)


def test_killing_any_one_member_of_a_3_node_etcd_changes_nothing(tiny_model, tmp_path):
    workdir = tempfile.mkdtemp(prefix="etcd3-", dir=tmp_path)
    etcd = EtcdCluster(workdir)
    etcd.start_all()
    cluster = Cluster(tmp_path / "run", tiny_model, "etcd", {"ETCD_ENDPOINTS": etcd.endpoints})
    (tmp_path / "run").mkdir()
    load = None
    try:
        load = two_workers_under_load(cluster)
        load.progress(6, "load running")
        for name in etcd.names:
            etcd.kill(name)
            # Longer than the lease TTL: keep-alives must have moved to a live member.
            time.sleep(12)
            load.progress(6, f"load with {name} down")
            assert cluster.worker_count(MODEL) == 2
            assert all_alive(cluster)
            etcd.start(name)
            wait_until(lambda n=name: etcd.healthy(n), 60, f"{name} back")
        cluster.mocker("--speedup-ratio", "20")
        cluster.wait_workers(MODEL, 3, timeout=60)  # registration and watches still work
    finally:
        if load is not None:
            load.finish()
        cluster.stop()
        etcd.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    assert load.failures == [], load.failures
