"""The worker harness's own watch on its event loop, on a real mocker worker process: a loop held
(here: the whole process stopped, as a starved or blocked worker is) is named in the worker's log and
in its `/metrics`, since the same stall delays its discovery keep-alive."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.fixtures.procs import http_get, metric_value, mocker_cluster, wait_until

pytestmark = pytest.mark.e2e


def test_a_held_event_loop_is_logged_and_measured(tiny_model, tmp_path):
    with mocker_cluster(tmp_path, tiny_model) as cluster:
        worker = cluster.procs[0]
        url = f"http://127.0.0.1:{worker.system_port}/metrics"
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            time.sleep(1.0)
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        wait_until(lambda: "event loop was held for" in worker.log(), 30, "the worker to log the held loop")
        lag = metric_value(http_get(url)[1].decode(), "dynamo_mocker_event_loop_lag_max_seconds")
        assert lag is not None and lag >= 0.8
