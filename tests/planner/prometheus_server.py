"""A real Prometheus server (Debian package `prometheus`, installed by
scripts/install_system_deps.sh) on a free 127.0.0.1 port, scraping the given targets
every second with a `dynamo_namespace` label, as the operator's PodMonitor attaches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from dynamo.runtime.net import free_port

PROMETHEUS_BIN = shutil.which("prometheus") or "/usr/bin/prometheus"


class PrometheusServer:
    def __init__(self, workdir: Path, targets: list[str], namespace: str, scrape_ms: int = 1000,
                 http_sd: str | None = None) -> None:
        """`http_sd`: also scrape what this URL lists (Prometheus' HTTP service discovery), e.g. the
        targets of a `dynamo.deploy run`'s control endpoint."""
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        job: dict = {"job_name": "dynamo", "static_configs": [
            {"targets": targets, "labels": {"dynamo_namespace": namespace.replace("-", "_")}}]}
        if http_sd:
            job["http_sd_configs"] = [{"url": http_sd, "refresh_interval": "1s"}]
        config = {"global": {"scrape_interval": f"{scrape_ms}ms", "evaluation_interval": f"{scrape_ms}ms"},
                  "scrape_configs": [job]}
        cfg_path = workdir / "prometheus.yml"
        cfg_path.write_text(json.dumps(config))  # JSON is YAML
        self.log_path = workdir / "prometheus.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS_BIN, f"--config.file={cfg_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("prometheus not ready in time")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)
        self._log.close()
