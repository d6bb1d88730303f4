"""A rolling update that changes a model's card (here the KV block size) under a running frontend: the
old workers serve until the new ones have outnumbered them for the settle time (--model-card-settle-secs),
then the new ones do, and no request fails on the way (one prepared for the old card as the card switches
is prepared again for the new one), although the two cards are never mixed (model_generations.py). /health
shows the rollout: the card served and the cards held apart, with their workers."""

from __future__ import annotations

import json
import threading

import openai
import pytest

from tests.fixtures.procs import Cluster, http_get, wait_until

pytestmark = pytest.mark.e2e


def test_workers_of_a_changed_card_take_over_without_a_failed_request(tiny_model, tmp_path):
    cluster = Cluster(tmp_path, tiny_model, "file")
    stop, failures, answered = threading.Event(), [], [0]

    def ask_continuously() -> None:
        client = openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="x", max_retries=0, timeout=60)
        while not stop.is_set():
            try:
                client.completions.create(model="tiny", prompt="ping " * 40, max_tokens=4)
                answered[0] += 1
            except openai.OpenAIError as exc:
                failures.append(repr(exc))

    try:
        old = cluster.mocker("--speedup-ratio", "50", "--block-size", "16")
        cluster.frontend()
        cluster.wait_workers("tiny", 1)
        client = threading.Thread(target=ask_continuously, daemon=True)
        client.start()
        served = cards(cluster)["served"]
        new = [cluster.mocker("--speedup-ratio", "50", "--block-size", "32") for _ in range(2)]
        frontend_log = cluster.procs[1].log_path  # read whole: every request is logged too
        wait_until(lambda: "now served by the workers of model card" in frontend_log.read_text(), 90,
                   "the frontend follows the new card")
        wait_until(lambda: cluster.worker_count("tiny") == 2, 30, "the two new workers serve")
        rollout = cards(cluster)  # the old card, held apart now, with its one worker still up
        assert rollout["served"] != served and rollout["held_apart"] == [{"checksum": served, "workers": 1,
                                                                          "ready": True}]
        at_switch = answered[0]
        old.stop()
        wait_until(lambda: answered[0] > at_switch + 20, 60, "requests answered after the old worker left")
        stop.set()
        client.join(timeout=90)
        assert failures == []
        assert all(w.alive() for w in new)
        assert "held apart" in frontend_log.read_text()
    finally:
        stop.set()
        cluster.stop()


def cards(cluster: Cluster) -> dict:
    """/health's view of the model's cards: the one served, those held apart."""
    status, body = http_get(cluster.base_url + "/health")
    assert status == 200, body
    return json.loads(body)["model_cards"]["tiny"]
