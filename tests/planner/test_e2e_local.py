"""The planner scales a running local graph (`python -m dynamo.deploy run`, aggregated
mocker) through the local connector: up under load, back down when the load stops,
with a trickle of requests kept running throughout so scale-down retires workers that
hold in-flight requests. Zero requests may fail."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.deploy.helpers import DeployRun, chat
from tests.fixtures.procs import REPO, Proc, free_port, http_get, metric_value, wait_until
from tests.planner.helpers import deploy_kv_dir, scale_ups_on_partial_fpms

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
MODEL = "tiny-llama"
MOCKER = REPO / "examples/backends/mocker/deploy"


class Load:
    """`concurrency` threads sending chat requests back to back; counts outcomes."""

    def __init__(self, port: int, concurrency: int, max_tokens: int, prompt_words: int = 60) -> None:
        self.port, self.max_tokens, self.words = port, max_tokens, prompt_words
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(concurrency)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            prompt = f"client {i} request {n}: " + "lorem ipsum dolor " * (self.words // 3)
            try:
                reply = chat(self.port, MODEL, prompt, max_tokens=self.max_tokens, timeout=60)
                assert reply["usage"]["completion_tokens"] >= 1
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # every failure is recorded and fails the test
                with self._lock:
                    self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(90)


def planner_config(control: str, metrics_port: int) -> dict:
    return {"environment": "local", "namespace": "default-mocker-agg", "backend": "mocker", "mode": "agg",
            "optimization_target": "latency",
            "control_url": control, "load_adjustment_interval_seconds": 2, "min_endpoint": 1, "max_endpoint": 3,
            "max_gpu_budget": 3, "metric_reporting_prometheus_port": metrics_port, "fpm_stale_seconds": 6,
            "replica_ready_timeout_seconds": 120}


def desired(run: DeployRun) -> int:
    return run.status()["services"]["MockerWorker"]


def test_planner_scales_local_graph_up_and_down_without_failures(tmp_path: Path, tiny_model):
    run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", str(tiny_model), "--append-args",
                    "MockerWorker=--num-gpu-blocks-override 48 --block-size 16 --speedup-ratio 2")
    planner = None
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 1})
        run.wait_workers(MODEL, 1)
        metrics_port = free_port()
        cfg = planner_config(run.control, metrics_port)
        planner = Proc("dynamo.planner", ["--config", json.dumps(cfg)],
                       {"DYN_FILE_KV": deploy_kv_dir(run.log_path), "DYN_DISCOVERY_BACKEND": "file", "DYN_LOG": "info"},
                       tmp_path, "planner")
        trickle = Load(run.port, 1, 8, prompt_words=20)
        burst = Load(run.port, 10, 60)
        wait_until(lambda: desired(run) >= 2, 120, "planner scales up under load", interval=1)
        run.wait_ready({"MockerWorker": desired(run)}, timeout=120)
        up_to = max(desired(run), 2)
        burst.stop()
        wait_until(lambda: desired(run) == 1, 120, "planner scales back down after the burst", interval=1)
        run.wait_ready({"MockerWorker": 1}, timeout=120)
        time.sleep(3)  # the trickle keeps going through the retirement
        trickle.stop()
        assert burst.failures == [] and trickle.failures == [], (burst.failures[:3], trickle.failures[:3])
        assert burst.ok > 10 and trickle.ok > 3
        log = planner.log_path.read_text()
        assert "planner decision [load] decode 1 -> 2 (applied)" in log, log[-3000:]
        assert f"decode {up_to} -> {up_to - 1} (applied)" in log
        assert scale_ups_on_partial_fpms(log) == []  # each scale-up saw every replica's FPM
        _, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metric_value(body.decode(), "dynamo_planner_num_decode_replicas") == 1.0
        assert (metric_value(body.decode(), "dynamo_planner_fpm_messages_total") or 0) > 10
        assert (metric_value(body.decode(), "dynamo_planner_tick_duration_seconds_count") or 0) > 3  # Dynamo's name
        # served on every interface, as Dynamo's (a cluster's Prometheus scrapes the pod's address)
        outward = _outward_address()
        if outward is not None:
            assert http_get(f"http://{outward}:{metrics_port}/metrics")[0] == 200
    finally:
        if planner is not None:
            planner.stop()
        run.stop()


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), None without one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))
        address = probe.getsockname()[0]
        return None if address.startswith("127.") else address
    except OSError:
        return None
    finally:
        probe.close()
