"""What `render` adds for Kubernetes-native discovery (the DGD annotated
`nvidia.com/dynamo-discovery-backend: kubernetes`, or `render --discovery kubernetes`), the objects
the Dynamo operator would otherwise provide: the discovery labels on each component's Service (the
EndpointSlice controller copies a Service's labels to its slices, which is how discovery finds ready
pods), a service account allowed to read EndpointSlices and write DynamoWorkerMetadata, and
optionally the DynamoWorkerMetadata CRD itself (cluster-scoped: `--include-crd`).
"""

from __future__ import annotations

from typing import Any

DISCOVERY_LABELS = {"nvidia.com/dynamo-discovery-backend": "kubernetes",
                    "nvidia.com/dynamo-discovery-enabled": "true"}
DISCOVERY_BACKENDS = ("etcd", "kubernetes")
RULES = [
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["nvidia.com"], "resources": ["dynamoworkermetadatas"],
     "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
]


def account_name(graph_k8s_name: str) -> str:
    return f"{graph_k8s_name}-discovery"


def rbac_objects(graph_k8s_name: str, namespace: str | None, labels: dict[str, str],
                 other_accounts: list[str]) -> list[dict[str, Any]]:
    """The discovery service account, its Role and the RoleBinding (to it and to the service accounts
    that components name themselves)."""
    name = account_name(graph_k8s_name)
    meta = {"name": name, "labels": labels, **({"namespace": namespace} if namespace else {})}
    subjects = [{"kind": "ServiceAccount", "name": account, **({"namespace": namespace} if namespace else {})}
                for account in dict.fromkeys([name, *other_accounts])]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": dict(meta), "rules": RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": dict(meta),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": subjects},
    ]


def crd_object() -> dict[str, Any]:
    """DynamoWorkerMetadata (`nvidia.com/v1alpha1`, namespaced, no schema: `spec.data` is free-form)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "dynamoworkermetadatas.nvidia.com"},
        "spec": {"group": "nvidia.com", "scope": "Namespaced",
                 "names": {"kind": "DynamoWorkerMetadata", "listKind": "DynamoWorkerMetadataList",
                           "plural": "dynamoworkermetadatas", "singular": "dynamoworkermetadata"},
                 "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object",
                                                              "x-kubernetes-preserve-unknown-fields": True}}}]},
    }
