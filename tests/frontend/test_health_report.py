"""The frontend's `/health` body: healthy with a serving worker, or with none while its requests wait for
one (--wait-for-workers-secs: a readiness probe must keep such a frontend in its Service), else unhealthy."""

from __future__ import annotations

from dynamo.frontend.model_routes import health_report


def test_no_worker_and_nothing_held_is_unhealthy():
    body = health_report([], {"router": {}})
    assert body["status"] == "unhealthy" and body["instances"] == [] and body["router"] == {}


def test_models_held_for_a_worker_are_healthy_and_named():
    body = health_report([], {}, held=["tiny", "other"])
    assert body["status"] == "healthy" and "tiny" in body["message"] and "other" in body["message"]
    assert body["endpoints"] == [] and body["instances"] == []


def test_nothing_held_is_the_same_as_no_wait():
    assert health_report([], {}, held=[])["status"] == "unhealthy"
