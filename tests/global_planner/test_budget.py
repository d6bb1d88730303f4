"""GPUs a graph's workers hold, as the GlobalPlanner counts them against its budget, in both DGD versions."""

from __future__ import annotations

import pytest

from dynamo.global_planner import budget


def test_v1alpha1_workers_count_replicas_times_gpus_times_nodes():
    dgd = {"spec": {"services": {
        "Frontend": {"componentType": "frontend", "replicas": 2, "resources": {"limits": {"gpu": "1"}}},
        "Prefill": {"componentType": "worker", "subComponentType": "prefill", "replicas": 2,
                    "resources": {"requests": {"gpu": "2"}}},
        "Decode": {"componentType": "worker", "subComponentType": "decode", "replicas": 1,
                   "resources": {"limits": {"gpu": 8}}, "multinode": {"nodeCount": 2}},
        "Planner": {"componentType": "planner", "replicas": 1}}}}
    assert budget.worker_gpus(dgd) == 2 * 2 + 1 * 8 * 2
    assert budget.worker_gpus(dgd, {"Decode": 2}) == 2 * 2 + 2 * 8 * 2
    assert budget.target_component(dgd, "decode", None) == "Decode"


def test_v1beta1_workers_count_the_main_containers_gpus():
    dgd = {"spec": {"components": [
        {"name": "fe", "type": "frontend", "replicas": 1},
        {"name": "w", "type": "decode", "replicas": 3,
         "podTemplate": {"spec": {"containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}}}]}}
    assert budget.worker_gpus(dgd) == 6
    assert budget.target_component(dgd, "decode", "w") == "w"
    with pytest.raises(ValueError, match="no component 'x'"):
        budget.target_component(dgd, "decode", "x")
    with pytest.raises(ValueError, match="cannot tell which component is the prefill pool"):
        budget.target_component(dgd, "prefill", None)
