"""`render --pod-monitors`: the prometheus-operator PodMonitors (`monitoring.coreos.com/v1`) Dynamo's
operator creates for a graph, so that a rendered graph is scraped as an operator-managed one. They select
the labels `render` puts on pods (`scrape.METRICS_LABEL`, the component type, the graph's name): the
frontends' `/metrics` on their `http` port, the other components' on their `system` port. Off by default:
a cluster without the prometheus-operator CRDs rejects the whole apply."""

from __future__ import annotations

from typing import Any

from dynamo.deploy import contract, names, scrape
from dynamo.deploy.model import Graph

API_VERSION = "monitoring.coreos.com/v1"
GRAPH_LABEL = "nvidia.com/dynamo-graph-deployment-name"
TYPE_LABEL = "nvidia.com/dynamo-component-type"


def _types(graph: Graph) -> dict[str, list[str]]:
    """{component type label value: the port names its pods serve /metrics on}, in the graph's order. A KServe
    gRPC frontend serves gRPC on `http` and its HTTP routes on the port `render` names `metrics`."""
    out: dict[str, list[str]] = {}
    for svc in graph.spec.services.values():
        ports = out.setdefault(svc.componentType or "worker", [])
        port = _metrics_port(svc)
        if port not in ports:
            ports.append(port)
    return out


def _metrics_port(svc) -> str:
    if not contract.is_frontend(svc):
        return "system"
    return "metrics" if contract.kserve_http_port(svc) is not None else "http"


def pod_monitors(graph: Graph, k8s_ns: str | None, warnings: list[str] | None = None) -> list[dict[str, Any]]:
    """One PodMonitor per component type of the graph; none when the graph opts out of metrics."""
    if not scrape.metrics_enabled(graph):
        if warnings is not None:
            warnings.append(f"{graph.metadata.name}: {scrape.METRICS_ANNOTATION} is false: no PodMonitors")
        return []
    dgd = names.k8s_name(graph.metadata.name)
    out = []
    types = _types(graph)
    for kind, ports in types.items():
        meta: dict[str, Any] = {"name": names.k8s_name(graph.metadata.name, kind, "metrics"),
                                "labels": {GRAPH_LABEL: dgd}}
        if k8s_ns:
            meta["namespace"] = k8s_ns
        selector = {scrape.METRICS_LABEL: "true", TYPE_LABEL: kind, GRAPH_LABEL: dgd}
        out.append({"apiVersion": API_VERSION, "kind": "PodMonitor", "metadata": meta,
                    "spec": {"selector": {"matchLabels": selector},
                             "podMetricsEndpoints": [{"port": port, "path": "/metrics"} for port in ports]}})
    if warnings is not None and "planner" in types:
        warnings.append(f"{graph.metadata.name}: the planner's PodMonitor scrapes its system port; its "
                        "dynamo_planner_* metrics are on --metric-reporting-prometheus-port, which is not declared")
    return out
