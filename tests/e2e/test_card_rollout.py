"""A rolling update that changes a model's card (here the KV block size) under a running frontend: the
old workers serve until the new ones have outnumbered them for the settle time (--model-card-settle-secs),
then the new ones do, and no request fails on the way (one prepared for the old card as the card switches
is prepared again for the new one), although the two cards are never mixed (model_generations.py). /health
shows the rollout: the card served and the cards held apart, with their workers. When the served card's last
worker goes first (a rollout retires it before the settle time is out), the frontend moves to the new card as it
leaves discovery, and the worker keeps serving through its grace period meanwhile: still no failed request."""

from __future__ import annotations

import json
import threading

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e
CLIENTS = 6  # concurrent clients, each sending back to back through the whole rollout


class Load:
    """CLIENTS threads sending completions continuously (no retries) until `finish`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.stop, self.failures, self.answered = cluster, threading.Event(), [], [0]
        self.threads = [threading.Thread(target=self._ask, daemon=True) for _ in range(CLIENTS)]
        for thread in self.threads:
            thread.start()

    def _ask(self) -> None:
        client = openai.OpenAI(base_url=self.cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
        while not self.stop.is_set():
            try:
                client.completions.create(model="tiny", prompt="ping " * 40, max_tokens=4)
                self.answered[0] += 1
            except openai.OpenAIError as exc:
                self.failures.append(repr(exc))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=90)


def test_workers_of_a_changed_card_take_over_without_a_failed_request(tiny_model, tmp_path):
    cluster = Cluster(tmp_path, tiny_model, "file")
    load = None
    try:
        old = cluster.mocker("--speedup-ratio", "50", "--block-size", "16")
        cluster.frontend()
        cluster.wait_workers("tiny", 1)
        load = Load(cluster)
        served = cards(cluster)["served"]
        new = [cluster.mocker("--speedup-ratio", "50", "--block-size", "32") for _ in range(2)]
        frontend_log = cluster.procs[1].log_path  # read whole: every request is logged too
        wait_until(lambda: "now served by the workers of model card" in frontend_log.read_text(), 90,
                   "the frontend follows the new card")
        wait_until(lambda: cluster.worker_count("tiny") == 2, 30, "the two new workers serve")
        rollout = cards(cluster)  # the old card, held apart now, with its one worker still up
        assert rollout["served"] != served and rollout["held_apart"] == [{"checksum": served, "workers": 1,
                                                                          "ready": True}]
        at_switch = load.answered[0]
        old.stop()
        wait_until(lambda: load.answered[0] > at_switch + 20, 60, "requests answered after the old worker left")
        load.finish()
        assert load.failures == []
        assert all(w.alive() for w in new)
        assert "held apart" in frontend_log.read_text()
    finally:
        if load is not None:
            load.stop.set()
        cluster.stop()


def test_the_served_cards_last_worker_leaving_first_fails_no_request(tiny_model, tmp_path):
    """As `run`'s rollout of two replicas does: the last old worker is retired once the new ones are ready, before
    they have outnumbered it for the settle time. Its requests go on while it leaves and the card switches."""
    cluster = Cluster(tmp_path, tiny_model, "file")
    load = None
    try:
        old = cluster.mocker("--speedup-ratio", "50", "--block-size", "16")
        cluster.frontend("--model-card-settle-secs", "60")  # the majority never settles: only the leaving switches
        cluster.wait_workers("tiny", 1)
        load = Load(cluster)
        served = cards(cluster)["served"]
        cluster.mocker("--speedup-ratio", "50", "--block-size", "32")
        wait_until(lambda: [c["ready"] for c in cards(cluster)["held_apart"]] == [True], 90,
                   "the new card's worker is up, held apart")
        wait_until(lambda: load.answered[0] > 50, 60, "requests answered by the old card's worker")
        at_stop = load.answered[0]
        old.stop()
        wait_until(lambda: load.answered[0] > at_stop + 100, 60, "requests answered after the old worker left")
        load.finish()
        assert load.failures == []
        assert cards(cluster)["served"] != served
    finally:
        if load is not None:
            load.stop.set()
        cluster.stop()


def cards(cluster: Cluster) -> dict:
    """/health's view of the model's cards: the one served, those held apart."""
    status, body = http_get(cluster.base_url + "/health")
    assert status == 200, body
    return json.loads(body)["model_cards"]["tiny"]
