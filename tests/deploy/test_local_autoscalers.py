"""The file's HPAs and KEDA ScaledObjects as `dynamo.deploy run` reads and evaluates them: what is
evaluated and what is said not to be, KEDA's activation from zero and cooldown back to it, the
HPA's arithmetic on the metric values (fed here as numbers; the metrics themselves are read in
test_scaler_metrics.py and end to end in test_run_autoscaling.py)."""

from __future__ import annotations

import pytest

from dynamo.deploy.local_autoscalers import Trigger, hpa, scaled_object


def keda_doc(**spec) -> dict:
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "so"},
            "spec": {"scaleTargetRef": {"name": "g-worker"}, "triggers": [
                {"type": "prometheus", "metadata": {"serverAddress": "http://prom.monitoring.svc:9090",
                                                    "query": "sum(x)", "threshold": "4"}}], **spec}}


def fed(scaler, values: list[float | None]):
    """The scaler's triggers replaced by ones answering `values` in turn (same targets and kinds)."""
    feed = iter(values)

    async def read():
        return next(feed)

    scaler.triggers = [Trigger(t.describe, read, t.target, t.kind, t.activation) for t in scaler.triggers]
    return scaler


async def test_keda_activates_from_zero_then_its_hpa_scales_by_average_value():
    notes: list[str] = []
    scaler = scaled_object(keda_doc(minReplicaCount=0, maxReplicaCount=5), "worker", list, {}, None, notes)
    assert notes == [] and scaler.interval == 30 and scaler.triggers[0].kind == "AverageValue"
    fed(scaler, [0, 1, 13, 100])
    assert (await scaler.step(10, 0))[0] == 0  # idle and already at zero
    assert (await scaler.step(20, 0))[0] == 1  # active (1 > activation 0): straight to max(min, 1)
    assert (await scaler.step(30, 1))[0] == 4  # 13 in all, 4 per replica -> 4 (+4 pods per 15 s allows it)
    assert (await scaler.step(50, 2))[0] == 5  # 100 / 4 -> 25, bounded by maxReplicaCount


async def test_keda_scales_to_zero_only_after_the_cooldown_since_last_active():
    scaler = scaled_object(keda_doc(minReplicaCount=0, cooldownPeriod=60), "worker", list, {}, None, [])
    scaler.started = 0.0
    fed(scaler, [2, 0, 0, 0])
    assert (await scaler.step(0, 1))[0] == 1  # active: its HPA holds 1 (2 / 4 within one replica)
    assert (await scaler.step(30, 1))[0] == 1  # inactive for 30 s of the 60 s cooldown: HPA at its min 1
    assert (await scaler.step(59, 1))[0] == 1
    assert (await scaler.step(61, 1))[0] == 0


async def test_keda_with_a_minimum_never_goes_to_zero_and_an_idle_count_is_its_floor():
    keep = fed(scaled_object(keda_doc(minReplicaCount=2, cooldownPeriod=0), "w", list, {}, None, []), [0])
    assert (await keep.step(500, 2))[0] == 2
    idle = fed(scaled_object(keda_doc(minReplicaCount=2, idleReplicaCount=0, cooldownPeriod=0), "w", list, {},
                             None, []), [0, 3])
    assert (await idle.step(500, 2))[0] == 0
    assert (await idle.step(510, 0))[0] == 2  # active again: back to the minimum


async def test_keda_value_metric_type_and_activation_threshold():
    doc = keda_doc(minReplicaCount=0)
    doc["spec"]["triggers"][0].update(metricType="Value")
    doc["spec"]["triggers"][0]["metadata"]["activationThreshold"] = "5"
    scaler = fed(scaled_object(doc, "w", list, {}, None, []), [3, 6])
    assert (await scaler.step(0, 0))[0] == 0  # 3 is not above the activation threshold 5
    assert (await scaler.step(1, 0))[0] == 1
    assert scaler.triggers[0].ratio(8, 3) == pytest.approx(2.0)  # Value: not divided among replicas


async def test_an_hpa_holds_a_target_at_zero_and_scales_on_utilisation():
    doc = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "fe"},
           "spec": {"minReplicas": 1, "maxReplicas": 4, "metrics": [
               {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                            "averageUtilization": 70}}}]}}
    scaler = hpa(doc, "Frontend", list, {"cpu": 1.0}, 15.0, [])
    fed(scaler, [140.0, 140.0])
    assert (await scaler.step(0, 0))[0] is None
    assert (await scaler.step(15, 2))[0] == 4  # 140% of a 70% target: twice the replicas


def test_what_is_not_evaluated_is_said():
    doc = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "decode-hpa"},
           "spec": {"maxReplicas": 9, "metrics": [
               {"type": "External", "external": {"metric": {"name": "dynamo_ttft_p95_seconds"},
                                                 "target": {"type": "Value", "value": "500m"}}},
               {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                            "averageUtilization": 70}}}]}}
    notes: list[str] = []
    assert hpa(doc, "decode", list, {}, 15.0, notes) is None  # its cpu metric has no request to divide by
    assert "External metric is not evaluated" in notes[0] and "no request" in notes[1]
    cron = keda_doc()
    cron["spec"]["triggers"] = [{"type": "cron", "metadata": {"start": "0 8 * * *"}}]
    notes = []
    assert scaled_object(cron, "w", list, {}, None, notes) is None
    assert notes == ["ScaledObject so: its cron trigger is not evaluated under run"]


def test_the_prometheus_endpoint_given_to_run_replaces_a_cluster_address():
    scaler = scaled_object(keda_doc(), "w", list, {}, "http://127.0.0.1:9099", [])
    assert scaler.clients[0].url == "http://127.0.0.1:9099"
    assert scaled_object(keda_doc(), "w", list, {}, None, []).clients[0].url == "http://prom.monitoring.svc:9090"


def test_a_malformed_autoscaler_is_an_error_naming_it():
    """`validate` reports it (autoscalers.unreadable), so neither `run`'s start nor an apply meets one."""
    from dynamo.deploy.local_autoscalers import build

    broken = keda_doc()
    del broken["spec"]["triggers"][0]["metadata"]["threshold"]
    with pytest.raises(ValueError, match=r"^ScaledObject so: cannot read 'threshold' \(a required field is missing\)$"):
        build(broken, "w", list, {}, None, 15.0, [])
    no_max = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": {"metrics": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "AverageValue", "averageValue": "500m"}}}]}}
    with pytest.raises(ValueError, match="HorizontalPodAutoscaler h: cannot read 'maxReplicas'"):
        build(no_max, "w", list, {}, None, 15.0, [])
    no_max["spec"]["metrics"][0]["resource"] = "cpu"
    with pytest.raises(ValueError, match=r"spec.metrics\[0\].resource: not a mapping"):
        build(no_max, "w", list, {}, None, 15.0, [])
