"""Helpers for the KV-routing end-to-end tests (real frontend + mocker processes)."""

from __future__ import annotations

import json
import random

import httpx

from tests.fixtures.procs import http_get, metric_value, wait_until

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
