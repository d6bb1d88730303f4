"""Dynamo's load-based `--router-mode`s on a real frontend over two real mocker workers, through
the official `openai` client: least-loaded and power-of-two put concurrent requests on the
worker with fewer in flight; direct serves only requests that name their worker."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("router-modes"), tiny_model, "file")
    try:
        # Real time: 8 answers of 200 tokens are all in flight while the last one is routed.
        c.workers = [c.mocker("--speedup-ratio", "1") for _ in range(2)]
        yield c
    finally:
        c.stop()


def served(proc) -> int:
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return int(metric_value(text, "dynamo_component_requests_total", {"dynamo_endpoint": "generate"}) or 0)


def frontend(c: Cluster, mode: str):
    proc = c.frontend("--router-mode", mode)
    c.wait_workers(MODEL, 2)
    return proc


def inflight(proc) -> int:
    text = http_get(f"http://127.0.0.1:{proc.system_port}/metrics")[1].decode()
    return int(metric_value(text, "dynamo_component_inflight_requests", {"dynamo_endpoint": "generate"}) or 0)


@pytest.mark.parametrize("mode", ["least-loaded", "power-of-two"])
def test_new_requests_go_to_the_worker_with_fewer_in_flight(cluster, mode):
    """Three long requests pinned to worker A, then four at once: round-robin would give A two more;
    these modes give the idle worker B at least three of them."""
    fe = frontend(cluster, mode)
    try:
        client = cluster.openai_client()
        a_id = sorted(i["instance_id"] for i in json.loads(http_get(cluster.base_url + "/health")[1])["instances"])[0]

        def ask(i: int, pin: int | None = None) -> int:
            extra = {"ignore_eos": True, **({"nvext": {"backend_instance_id": pin}} if pin is not None else {})}
            reply = client.completions.create(model=MODEL, prompt=f"request {i}", max_tokens=400 if pin else 100,
                                              extra_body=extra)
            return reply.usage.completion_tokens

        before = [served(w) for w in cluster.workers]
        with ThreadPoolExecutor(8) as pool:
            pinned = [pool.submit(ask, i, a_id) for i in range(3)]
            wait_until(lambda: sorted(inflight(w) for w in cluster.workers) == [0, 3], 60, "3 pinned in flight")
            a = next(w for w in cluster.workers if inflight(w) == 3)
            b = next(w for w in cluster.workers if w is not a)
            free = list(pool.map(ask, range(3, 7)))
            assert [f.result() for f in pinned] == [400] * 3 and free == [100] * 4
        got = {w: served(w) - n for w, n in zip(cluster.workers, before)}
        assert got[b] >= 3 and got[a] + got[b] == 7, got
    finally:
        fe.stop()
        cluster.procs.remove(fe)


def test_direct_mode_serves_only_requests_naming_their_worker(cluster):
    fe = frontend(cluster, "direct")
    try:
        client = cluster.openai_client()
        with pytest.raises(openai.BadRequestError) as exc:
            client.completions.create(model=MODEL, prompt="who serves me?", max_tokens=2)
        err = exc.value.body
        assert err["param"] == "nvext.backend_instance_id" and err["code"] == "worker_id_required"
        health = http_get(cluster.base_url + "/health")[1].decode()
        target = sorted(i["instance_id"] for i in json.loads(health)["instances"])[1]
        before = [served(w) for w in cluster.workers]
        for _ in range(3):
            reply = client.completions.create(model=MODEL, prompt="me", max_tokens=2,
                                              extra_body={"nvext": {"backend_instance_id": target}})
            assert reply.usage.completion_tokens == 2
        assert sorted(served(w) - b for w, b in zip(cluster.workers, before)) == [0, 3]  # all on one worker
    finally:
        fe.stop()
        cluster.procs.remove(fe)
