"""What `render` adds so that a graph's planner scales it with no operator: on Kubernetes the planner
patches a DGD, which a graph rendered to plain objects does not have, so the rendered planner is told
to scale the graph's Deployments instead (`$DYN_PLANNER_DEPLOYMENT_SELECTOR`, read by
`dynamo.planner.connectors.kube_deployments`), each Deployment says which DGD service it is (an
annotation), and the planner's service account may read and scale them (a Role and its binding)."""

from __future__ import annotations

from typing import Any

# What the planner's Deployments connector reads: one owner for the label and annotation names.
from dynamo.planner.connectors.kube_deployments import GRAPH_LABEL, NAME_ANNOTATION  # noqa: F401

SELECTOR_ENV = "DYN_PLANNER_DEPLOYMENT_SELECTOR"
RULES = [
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"]},
]


def selector(graph_k8s_name: str) -> str:
    return f"{GRAPH_LABEL}={graph_k8s_name}"


def account_name(graph_k8s_name: str) -> str:
    return f"{graph_k8s_name}-planner"


def rbac_objects(graph_k8s_name: str, namespace: str | None, labels: dict[str, str],
                 accounts: list[str]) -> list[dict[str, Any]]:
    """The Role that reads and scales the graph's Deployments, bound to the planner pods' service
    accounts; the planner's own account where a planner pod uses it (none named, no discovery account)."""
    name = account_name(graph_k8s_name)
    meta = {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}
    subjects = [{"kind": "ServiceAccount", "name": account, **({"namespace": namespace} if namespace else {})}
                for account in dict.fromkeys(accounts)]
    objects: list[dict[str, Any]] = []
    if name in accounts:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)})
    return objects + [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta), "rules": RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}, "subjects": subjects},
    ]
