"""Token-exact migration when the decode worker of a disaggregated pair dies: real vLLM CPU
engines, one prefill and two decode `dynamo.vllm` workers (KV over our TCP transfer), a frontend
with `--migration-limit 3 --enforce-disagg`. Greedy streams run once uninterrupted (the
reference), then again while the decode worker holding the most of them is SIGKILLed mid-stream:
its streams continue on the other decode worker (which prefills prompt + tokens so far itself)
and every stream's output (text, and logprob tokens where asked; see `test_migration`) equals the
reference. Engines start once for the module."""

from __future__ import annotations

import signal

import pytest

from tests.vllm.conftest import MODEL, VllmCluster, wait_healthy
from tests.vllm.disagg_helpers import frontend_metric, served
from tests.vllm.test_migration import interrupted_run, same_output
from tests.vllm.test_migration import run_streams as run_migration_streams

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1500)]


STREAMS = 16  # each is prefilled remotely, then decoded: half of the aggregated test's 32 keeps it in budget


def run_streams(base_url: str, during=None) -> list[dict]:
    return run_migration_streams(base_url, during, STREAMS)


@pytest.fixture(scope="module")
def cluster(vllm_python, vllm_model, tmp_path_factory):
    c = VllmCluster(tmp_path_factory.mktemp("vllm-disagg-death"), vllm_model, vllm_python)
    try:
        c.frontend("--migration-limit", "3", "--enforce-disagg")
        c.prefill = c.vllm_worker("--disaggregation-mode", "prefill", "--kv-transfer-backend", "tcp",
                                  env={"VLLM_CPU_OMP_THREADS_BIND": "0"}, wait=False)
        c.decoders = [c.vllm_worker("--disaggregation-mode", "decode", "--kv-transfer-backend", "tcp",
                                    env={"VLLM_CPU_OMP_THREADS_BIND": str(i)}, wait=False) for i in (0, 1)]
        for w in (c.prefill, *c.decoders):
            wait_healthy(w, timeout=900)
        c.wait_workers(MODEL, 3, timeout=120)
        c.reference = run_streams(c.base_url)
        yield c
    finally:
        c.stop()


def test_decode_worker_killed_mid_stream_migrates_token_exact(cluster):
    url = cluster.base_url
    texts = [ref["text"][0] for ref in cluster.reference]
    assert all(texts) and len(set(texts)) > 1
    assert frontend_metric(url, "dynamo_frontend_remote_prefills_total", {"model": MODEL}) >= len(cluster.reference)
    before = frontend_metric(url, "dynamo_frontend_model_migration_total", {"migration_type": "ongoing_request"})
    outputs, victim = interrupted_run(url, cluster.decoders, signal.SIGKILL, STREAMS)
    moved = frontend_metric(url, "dynamo_frontend_model_migration_total",
                            {"migration_type": "ongoing_request"}) - before
    mismatched = [i for i, got in enumerate(outputs) if not same_output(got, cluster.reference[i])]
    print(f"{moved:.0f} of {STREAMS} streams migrated off the killed decode worker")
    assert mismatched == [], [(outputs[i], cluster.reference[i]) for i in mismatched[:3]]
    assert moved >= 1, "no stream was migrated"
    survivor = next(d for d in cluster.decoders if d is not victim)
    assert survivor.alive() and cluster.prefill.alive()
    # The prefills of this run went to the prefill worker: the pair stayed disaggregated.
    assert served(cluster.prefill) >= 2 * len(cluster.reference)
