"""`--router-policy-config` end to end: a real frontend started with NVIDIA Dynamo's router policy
YAML routes a mocker's model with the YAML's queue classes (its queue policy and busy thresholds in
`/health`, its `router:` settings in the config dump) and serves; a document Dynamo refuses stops the
frontend at start with a message naming the file and the key, not a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fixtures.procs import REPO, Cluster, free_port
from tests.router.e2e_helpers import MODEL, complete, route_info, tokens

pytestmark = pytest.mark.e2e

POLICY = """
router:
  router_ttl_secs: 45
  serve_indexer: true
default_policy_family: standard
uncached_isl_buckets:
  - {min_tokens: 0, bucket: small}
  - {min_tokens: 4096, bucket: large}
policy_classes:
  - {name: interactive, policy_family: standard, cache_bucket: small, queue_policy: wspt, quantum: 4,
     prefill_busy_threshold: 8192, request_queue_limit_per_worker: 16}
  - {name: bulk, policy_family: standard, cache_bucket: large, quantum: 1, prefill_busy_threshold_frac: 1.5}
"""


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("policy-config")
    (tmp / "policy.yaml").write_text(POLICY)
    c = Cluster(tmp, tiny_model, "file")
    try:
        c.mocker("--speedup-ratio", "100")
        c.frontend("--router-mode", "kv", "--router-policy-config", str(tmp / "policy.yaml"),
                   "--dump-config-to", str(tmp / "dump.json"))
        c.wait_workers(MODEL, 1)
        yield c
    finally:
        c.stop()


def test_the_pool_takes_the_yamls_classes_and_serves(cluster):
    complete(cluster.base_url, tokens(1, 40))
    queue = route_info(cluster.base_url)["queue"]
    assert (queue["policy"], queue["profile"]) == ("wspt", "root")
    interactive, bulk = queue["classes"]
    assert (interactive["name"], interactive["prefill_busy_threshold"], interactive["quantum"],
            interactive["request_queue_limit_per_worker"]) == ("interactive", 8192, 4, 16)
    assert (bulk["name"], bulk["queue_policy"], bulk["prefill_busy_threshold_frac"]) == ("bulk", "fcfs", 1.5)
    dump = json.loads((cluster.tmp / "dump.json").read_text())
    assert dump["config"]["router_ttl_secs"] == 45.0  # the YAML's `router:` setting, in effect
    log = cluster.procs[-1].log()
    assert "router.serve_indexer in --router-policy-config" in log and "has no effect" in log


def test_a_refused_document_stops_the_frontend_naming_file_and_key(cluster):
    bad = cluster.tmp / "bad.yaml"
    bad.write_text(POLICY.replace("quantum: 4", "quantum: 0"))
    result = subprocess.run([sys.executable, "-m", "dynamo.frontend", "--http-host", "127.0.0.1", "--http-port",
                             str(free_port()), "--router-mode", "kv", "--router-policy-config", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={**cluster.env, "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2, result.stderr
    assert f"--router-policy-config {bad}: policy_classes[0].quantum" in result.stderr
    assert "quantum must be greater than zero" in result.stderr and "Traceback" not in result.stderr
