"""Only a multi-node group's leader serves the system port, so only the leader pod advertises metrics:
the non-leader pods of a rendered LeaderWorkerSet carry no `nvidia.com/metrics-enabled` label, no
`prometheus.io/*` annotations and no `system` containerPort (each was a scrape target always down)."""

from __future__ import annotations

from dynamo.deploy.render import render
from dynamo.deploy.scrape import METRICS_LABEL
from tests.deploy.test_render_graphs import MULTINODE, graph_of


def groups() -> list[dict]:
    return [o["spec"]["leaderWorkerTemplate"] for o in render(graph_of(MULTINODE), "prod")
            if o["kind"] == "LeaderWorkerSet"]


def ports(template: dict) -> set[str]:
    return {p.get("name") for p in template["spec"]["containers"][0].get("ports") or []}


def test_only_the_leader_pod_advertises_metrics():
    assert groups()
    for group in groups():
        leader, worker = group["leaderTemplate"], group["workerTemplate"]
        assert leader["metadata"]["labels"][METRICS_LABEL] == "true"
        assert leader["metadata"]["annotations"]["prometheus.io/scrape"] == "true" and "system" in ports(leader)
        assert METRICS_LABEL not in worker["metadata"]["labels"]
        assert not any(k.startswith("prometheus.io/") for k in worker["metadata"].get("annotations") or {})
        assert "system" not in ports(worker)
        # the rest of the pod identity is the leader's (the group's selector labels, the component)
        assert {k: v for k, v in leader["metadata"]["labels"].items() if k != METRICS_LABEL} == \
            worker["metadata"]["labels"]
