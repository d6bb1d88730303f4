"""What `render` puts on pods so that the graph's metrics are scraped as an operator-managed graph's are:
the operator's `nvidia.com/metrics-enabled` label (selected by the PodMonitors of Dynamo's platform chart
and by AIPerf's discovery) and the conventional `prometheus.io/*` annotations (for a Prometheus that
discovers pods without the Prometheus operator). The DGD annotation `nvidia.com/enable-metrics: "false"`
opts out, as with the operator."""

from __future__ import annotations

from dynamo.deploy.model import Graph

METRICS_LABEL = "nvidia.com/metrics-enabled"
METRICS_ANNOTATION = "nvidia.com/enable-metrics"


def metrics_enabled(graph: Graph) -> bool:
    # Dynamo's opt-out: the DGD annotation nvidia.com/enable-metrics: "false"
    return str((graph.metadata.annotations or {}).get(METRICS_ANNOTATION, "true")).lower() != "false"


def pod_labels(graph: Graph) -> dict[str, str]:
    """The label the operator puts on every pod it manages, which the PodMonitors of Dynamo's platform chart
    (and AIPerf's discovery) select: a rendered graph is scraped as an operator-managed one would be."""
    return {METRICS_LABEL: "true"} if metrics_enabled(graph) else {}


def pod_annotations(graph: Graph, port: int) -> dict[str, str]:
    """The conventional annotations for a Prometheus that discovers pods without the Prometheus operator."""
    if not metrics_enabled(graph):
        return {}
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
