"""What the disaggregated vLLM modules (`test_disagg_nixl`, `test_disagg_tcp`) share: the
prompts, a module fixture's start-up of one prefill/decode pair behind its own frontend, and
the token-exact check against vLLM's own aggregated output.

Each module starts at most three CPU engines: with five at once on a 2-core box (the former
single module) keep-alives stalled past the discovery TTL and one engine's first step hung
until vLLM's 300 s execute-model timeout killed it."""

from __future__ import annotations

import json

import openai

from dynamo.llm.tokenizer import Tokenizer
from tests.fixtures.procs import http_get, metric_value, wait_until
from tests.vllm.conftest import MODEL, SCRAPE_TIMEOUT_S, VllmCluster, VenvProc, ids, metrics, offline_reference, reference_result

MAX_TOKENS = 16


PROMPTS = [ids(75, 2), ids(140, 3)]  # several 32-token blocks, the last one partial


def start_pair(cluster: VllmCluster, ns: str, prefill: list[str], decode: list[str],
               extra: dict[str, tuple[int, list[str]]] | None = None) -> dict:
    """Prefill (core 0) and decode (core 1) workers in namespace `ns`, plus `extra` workers
    (name: (core, args)), vLLM's offline reference beside their start-up, and a frontend for
    `ns`. Returns the module's env: workers by name, `url`, `reference`, `tokenizer`."""
    def worker(core: int, args: list[str]) -> VenvProc:
        return cluster.vllm_worker(*args, env={"DYN_NAMESPACE": ns, "VLLM_CPU_OMP_THREADS_BIND": str(core)},
                                   wait=False)

    workers = {"prefill": worker(0, prefill), "decode": worker(1, decode),
               **{name: worker(core, args) for name, (core, args) in (extra or {}).items()}}
    reference = offline_reference(cluster.python, cluster.model_dir, PROMPTS, MAX_TOKENS,
                                  cluster.tmp / "reference.log")
    cluster.frontend("--namespace", ns)
    workers = cluster.wait_all_healthy(workers)
    url = cluster.base_url
    wait_until(lambda: instances(url, MODEL) == 2, 60, f"2 {ns} workers")
    return {"cluster": cluster, "url": url, "reference": reference_result(reference),
            "tokenizer": Tokenizer.from_dir(cluster.model_dir), **workers}


def instances(url: str, model: str) -> int:
    found = json.loads(http_get(url + "/health")[1]).get("instances", [])
    return sum(1 for i in found if i.get("model") == model)


def worker_metric(proc, name: str, labels: dict | None = None) -> float:
    return metric_value(metrics(proc), name, labels) or 0.0


def served(proc) -> float:
    """Generate requests a worker answered without an error: all it counted less its errors (whether or
    not `dynamo_component_requests_total` has a `status` label, which Dynamo 1.6.1's has not)."""
    text, generate = metrics(proc), {"dynamo_endpoint": "generate"}
    return ((metric_value(text, "dynamo_component_requests_total", generate) or 0.0)
            - (metric_value(text, "dynamo_component_errors_total", generate) or 0.0))


def frontend_metric(url: str, name: str, labels: dict | None = None) -> float:
    return metric_value(http_get(url + "/metrics", timeout=SCRAPE_TIMEOUT_S)[1].decode(), name, labels) or 0.0


def check_token_exact(env: dict, transport: str) -> None:
    """Two greedy completions through the frontend equal vLLM's aggregated output; the prefill
    worker served both prefills and the decode worker pulled their KV over `transport`."""
    # Retries on 503: should a worker's keep-alive stall past the discovery TTL on a loaded box
    # (its log: "lease ... lost (keep-alive stalled past the TTL); re-registering"), the frontend
    # rightly has no decode worker for that moment; a real client retries, and so does this one.
    client = openai.OpenAI(base_url=env["url"] + "/v1", api_key="x", max_retries=4, timeout=120)
    wait_until(lambda: instances(env["url"], MODEL) == 2, 120, "both workers registered")
    before = served(env["prefill"])
    for prompt, expected in zip(PROMPTS, env["reference"]):
        resp = client.completions.create(model=MODEL, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0)
        assert resp.choices[0].text == env["tokenizer"].decode(expected)
        assert resp.usage.completion_tokens == len(expected)
    # At least: a retried 503 may have prefilled once before finding no decode worker.
    assert served(env["prefill"]) >= before + 2
    assert frontend_metric(env["url"], "dynamo_frontend_remote_prefills_total", {"model": MODEL}) >= 2
    assert frontend_metric(env["url"], "dynamo_frontend_kv_transfer_bytes_total", {"transport": transport}) > 0
    for role in ("prefill", "decode"):
        assert worker_metric(env[role], "dynamo_component_kv_transfer_transport", {"transport": transport}) == 1
    wait_until(lambda: worker_metric(env["decode"], "dynamo_component_kv_transfer_bytes_total",
                                     {"direction": "received"}) > 0, 15, "decode worker to count received KV")
    assert worker_metric(env["decode"], "dynamo_component_kv_transfer_failures_total") == 0
    # KV events: the prefill worker relays vLLM's (its blocks feed a prefill-pool KV router); a
    # decode worker never publishes (-1: no relay at all), its blocks being pulled copies.
    wait_until(lambda: worker_metric(env["prefill"], "dynamo_vllm_kv_events_relayed") >= 1, 15,
               "prefill worker to relay KV events")
    assert worker_metric(env["decode"], "dynamo_vllm_kv_events_relayed") == -1
