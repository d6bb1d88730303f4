"""A managed rolling update's two generations side by side: mocker prefill and decode workers in two hashed
namespaces (`dyn-<hash8>`, as NVIDIA Dynamo's operator names them) behind one frontend with `--namespace-prefix`
and the KV router. Every request is prefilled and decoded within one namespace (the workers' own logs say which
worker got it), both namespaces serve, and `/health` and the metrics show the two sets."""

from __future__ import annotations

import json
import re

import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
OLD, NEW = "dyn-a1b2c3d4", "dyn-f5e6d7c8"
RECEIVED = re.compile(r"request received request_id=(\S+)")


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("worker_sets"), tiny_model, "file")
    try:
        c.workers = {}
        for ns in (OLD, NEW):
            c.workers[(ns, "prefill")] = c.mocker("--namespace", ns, "--speedup-ratio", "50",
                                                  "--disaggregation-mode", "prefill")
            c.workers[(ns, "decode")] = c.mocker("--namespace", ns, "--speedup-ratio", "50", "--is-decode-worker")
        c.frontend("--namespace-prefix", "dyn-", "--router-mode", "kv")
        c.wait_workers(MODEL, 4, timeout=120)
        yield c
    finally:
        c.stop()


def received(proc) -> list[str]:
    """The request ids the worker's log says it received (the whole log: `Proc.log` is its tail)."""
    return RECEIVED.findall(proc.log_path.read_text(errors="replace"))


def test_each_request_is_prefilled_and_decoded_in_one_namespace(cluster):
    client = cluster.openai_client(timeout=120)
    rids = []  # the response ids: the workers' logs name each request by its id
    for i in range(24):
        prompt = f"request {i} of the rollout " * 12
        if i % 2:
            parts = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, stream=True))
            assert parts and parts[-1].choices[0].finish_reason == "length"
            rids.append(parts[0].id)
        else:
            resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6)
            assert resp.usage.completion_tokens == 6
            rids.append(resp.id)
    assert len(set(rids)) == len(rids)

    def all_logged() -> bool:
        seen = [rid for proc in cluster.workers.values() for logged in received(proc) for rid in rids if rid in logged]
        return len(seen) >= 2 * len(rids)
    wait_until(all_logged, 60, "every request in the workers' logs")
    where: dict[str, dict[str, list[str]]] = {rid: {"prefill": [], "decode": []} for rid in rids}
    for (ns, role), proc in cluster.workers.items():
        for logged in received(proc):
            for rid in rids:
                if rid in logged:
                    where[rid][role].append(ns)
    for rid, roles in where.items():
        assert len(roles["prefill"]) == 1 and roles["prefill"] == roles["decode"], (rid, roles)
    per_ns = {ns: sum(1 for roles in where.values() if roles["decode"] == [ns]) for ns in (OLD, NEW)}
    assert per_ns[OLD] > 0 and per_ns[NEW] > 0, per_ns  # both generations serve (about half each)
    text = http_get(cluster.base_url + "/metrics")[1].decode()
    for ns in (OLD, NEW):
        counted = metric_value(text, "dynamo_frontend_worker_set_requests_total", {"model": MODEL, "namespace": ns})
        assert counted == per_ns[ns], (ns, counted, per_ns)


def test_health_lists_the_models_worker_sets(cluster):
    body = json.loads(http_get(cluster.base_url + "/health")[1])
    assert body["status"] == "healthy"
    assert body["worker_sets"] == {MODEL: [{"namespace": OLD, "decode_workers": 1, "prefill_workers": 1},
                                           {"namespace": NEW, "decode_workers": 1, "prefill_workers": 1}]}
