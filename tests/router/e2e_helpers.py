"""Helpers for the KV-routing end-to-end tests (real frontend + mocker processes)."""

from __future__ import annotations

import json
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

MODEL = "tiny"
BLOCK = 16
SMALL_KV = ("--num-gpu-blocks-override", "64", "--block-size", str(BLOCK), "--speedup-ratio", "10")


def tokens(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(100, 400) for _ in range(n)]


def complete(base_url: str, prompt: list[int], model: str = MODEL, max_tokens: int = 4) -> dict:
    resp = httpx.post(base_url + "/v1/completions", timeout=60,
                      json={"model": model, "prompt": prompt, "max_tokens": max_tokens})
    assert resp.status_code == 200, resp.text
    return resp.json()


def cached_tokens(body: dict) -> int:
    return (body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0


def health(base_url: str) -> dict:
    return json.loads(http_get(base_url + "/health")[1])


def route_info(base_url: str, model: str = MODEL) -> dict:
    return health(base_url).get("router", {}).get("models", {}).get(model, {})


def metrics(base_url: str) -> str:
    return http_get(base_url + "/metrics")[1].decode()


def worker_requests(proc) -> float:
    """`generate` requests a mocker has served, from its own /metrics."""
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0.0


def wait_indexed(base_url: str, min_blocks: int, model: str = MODEL, timeout: float = 20) -> None:
    """Until the router has indexed at least `min_blocks` blocks on some worker."""
    wait_until(lambda: max(route_info(base_url, model).get("indexed_blocks", {}).values() or [0]) >= min_blocks,
               timeout, f"{min_blocks} indexed blocks")


@contextmanager
def nats_kv_cluster(tmp: Path, model_dir: Path, etcd: str, nats: str, *frontend_args: str,
                    frontend_env: dict | None = None) -> Iterator[Cluster]:
    """Two small-KV mockers publishing KV events over NATS (etcd discovery) behind a KV-routing frontend
    started with `frontend_args` and `frontend_env` (e.g. another DYN_EVENT_PLANE); stopped on exit.
    The mockers are `cluster.workers`."""
    c = Cluster(tmp, model_dir, "etcd", {"ETCD_ENDPOINTS": etcd, "NATS_SERVER": nats, "DYN_EVENT_PLANE": "nats"})
    try:
        c.workers = [c.mocker(*SMALL_KV) for _ in range(2)]  # type: ignore[attr-defined]
        c.frontend("--router-mode", "kv", *frontend_args, env=frontend_env)
        c.wait_workers(MODEL, 2)
        yield c
    finally:
        c.stop()
