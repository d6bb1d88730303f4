"""Scale-down through `dynamo.deploy run` under streaming load: the supervisor SIGTERMs
the surplus replicas, which leave discovery and drain, so no client request fails even
without migration."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import DeployRun
from tests.fixtures.load import Load
from tests.fixtures.procs import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MOCKER = REPO / "examples/backends/mocker/deploy"
MODEL = "tiny-llama"


def test_scale_down_under_load_loses_no_request(tmp_path, tiny_model):
    run = DeployRun(MOCKER / "agg.yaml", tmp_path, "--model", str(tiny_model), "--set", "MockerWorker.replicas=3",
                    env={"DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS": "2"})
    load = None
    try:
        run.wait_ready({"Frontend": 1, "MockerWorker": 3})
        run.wait_workers(MODEL, 3)
        load = Load(f"http://127.0.0.1:{run.port}", clients=4, max_tokens=32, pause=0, model=MODEL)
        load.start()
        load.progress(12, "load on three replicas")
        run.scale("MockerWorker", 1)
        run.wait_ready({"MockerWorker": 1})
        run.wait_workers(MODEL, 1)
        load.progress(12, "load on the remaining replica")
    finally:
        if load is not None:
            load.finish()
        run.stop()
    assert load.failures == [], load.failures[:5]
    assert "did not stop within" not in run.log()  # drained and exited, not killed
