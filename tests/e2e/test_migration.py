"""Request migration: a worker killed mid-stream does not lose the request when the
frontend runs with --migration-limit; the client sees one seamless stream."""

from __future__ import annotations

import pytest

from tests.e2e.test_migration_limits import stream_with_one_kill
from tests.fixtures.procs import Cluster, http_get, metric_value

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("migration"), tiny_model, "file")
    try:
        c.workers = [c.mocker("--speedup-ratio", "2"), c.mocker("--speedup-ratio", "2")]
        c.frontend("--migration-limit", "2")
        c.wait_workers(MODEL, 2)
        yield c
    finally:
        c.stop()


def test_worker_killed_mid_stream_is_migrated(cluster):
    body = {"model": MODEL, "prompt": "migrate me please", "max_tokens": 300, "stream": True,
            "stream_options": {"include_usage": True}}
    text, finish, usage, killed = stream_with_one_kill(cluster, body)
    assert killed is not None
    assert finish == ["length"]
    assert usage["completion_tokens"] == 300
    survivor = next(w for w in cluster.workers if w is not killed)
    text_metrics = http_get(cluster.base_url + "/metrics")[1].decode()
    assert metric_value(text_metrics, "dynamo_frontend_model_migration_total",
                        {"migration_type": "ongoing_request"}) == 1
    assert survivor.alive()
