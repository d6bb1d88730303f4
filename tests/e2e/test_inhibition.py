"""Local inhibition of a failed worker, end to end: two real frontends on the same discovery and
the same two mockers, one with the default `DYN_INHIBITED_DURATION_SECS` (5 s), one with 0 (off).
Both stream completions back to back; one worker is SIGKILLed and stays in discovery until its
lease (10 s) expires. The frontend with inhibition retries its requests on the dead worker only a
handful of times; the one without keeps picking it for every other request until discovery drops
it. Both lose nothing (`--migration-limit`)."""

from __future__ import annotations

import json
import math
import time

import pytest

from tests.fixtures.load import Load
from tests.fixtures.procs import Cluster, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

MODEL = "tiny"
CLIENTS = 3


def new_request_retries(base_url: str) -> float:
    text = http_get(base_url + "/metrics")[1].decode()
    return metric_value(text, "dynamo_frontend_model_migration_total", {"migration_type": "new_request"}) or 0.0


def workers_seen(base_url: str) -> int:
    return sum(1 for inst in json.loads(http_get(base_url + "/health")[1])["instances"] if inst["model"] == MODEL)


def test_a_killed_worker_is_inhibited_and_not_retried_until_discovery_drops_it(tiny_model, tmp_path):
    c = Cluster(tmp_path, tiny_model, "file")
    loads: list[Load] = []
    try:
        workers = [c.mocker("--speedup-ratio", "10"), c.mocker("--speedup-ratio", "10")]
        c.frontend("--migration-limit", "3")
        with_inhibition = c.base_url
        c.frontend("--migration-limit", "3", env={"DYN_INHIBITED_DURATION_SECS": "0"})
        without = c.base_url
        for url in (with_inhibition, without):
            wait_until(lambda url=url: workers_seen(url) == 2, 60, "both workers at both frontends")
        loads = [Load(url, clients=CLIENTS, max_tokens=8, pause=0.0) for url in (with_inhibition, without)]
        for load in loads:
            load.start()
        for load in loads:
            load.progress(10, "load before the kill")
        workers[0].kill()
        killed_at = time.monotonic()
        # The dead worker stays in discovery until its lease expires (10 s TTL): the window in
        # which every new request may be routed to it.
        for url in (with_inhibition, without):
            wait_until(lambda url=url: workers_seen(url) == 1, 60, "discovery drops the killed worker")
        listed_dead = time.monotonic() - killed_at  # longer on a starved box: more inhibition lapses
        for load in loads:
            load.progress(5, "load after discovery dropped the worker")
            load.finish()
        inhibited, plain = new_request_retries(with_inhibition), new_request_retries(without)
        print(f"new_request retries: inhibition on {inhibited:.0f}, off {plain:.0f}; "
              f"requests ok {loads[0].ok} / {loads[1].ok}")
        for load in loads:
            assert load.failures == []
        # With inhibition: the requests in flight at the kill, plus at most one probe per client
        # each time the 5 s inhibition lapses while discovery still lists the worker.
        lapses = math.ceil(listed_dead / 5.0)
        assert inhibited <= CLIENTS * (1 + lapses), (inhibited, plain, listed_dead)
        # Without it every other request in the ~10 s window tries the dead worker first.
        assert plain > 2 * inhibited + CLIENTS, (inhibited, plain)
        text = http_get(with_inhibition + "/metrics")[1].decode()
        assert (metric_value(text, "dynamo_frontend_worker_inhibitions_total") or 0) >= 1
        health = json.loads(http_get(with_inhibition + "/health")[1])
        assert health["inhibition"]["duration_secs"] == 5.0
        assert json.loads(http_get(without + "/health")[1])["inhibition"]["inhibitions_total"] == {
            "cannot_connect": 0, "disconnected": 0, "draining": 0, "timeout": 0}
        assert workers[1].alive()
    finally:
        for load in loads:
            load.stop_event.set()
        c.stop()
