"""`python -m dynamo.deploy render FILE`: a manifest file as plain Kubernetes objects. Each
DynamoGraphDeployment in it is rendered (`render.py`), so a file of several graphs (Dynamo's GlobalPlanner
examples: a control graph and the model graphs) renders whole; the plain Kubernetes objects beside them
(ConfigMaps, Secrets, PVCs, RBAC: the profiler's `final_config.yaml` is [ConfigMap, DGD]) are passed
through as written, in the target namespace unless cluster-scoped, except that an HPA / KEDA ScaledObject
aimed at a service's DynamoGraphDeploymentScalingAdapter is aimed at its rendered Deployment (`autoscalers.py`);
DynamoModels become adapter sidecars."""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import yaml

from dynamo.deploy import autoscalers, config_maps, contract, monitors, names
from dynamo.deploy.dynamo_model import KIND as DYNAMO_MODEL_KIND
from dynamo.deploy.dynamo_model import add_sidecars, load_models
from dynamo.deploy.model import Graph
from dynamo.deploy.pull_secrets import parse_pull_secret, secrets_from_file
from dynamo.deploy.render import render
from dynamo.deploy.validate import load_documents, validate_file

CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass", "IngressClass", "RuntimeClass"}


def passthrough_objects(docs: list[Any], k8s_ns: str | None) -> list[dict[str, Any]]:
    """The file's plain Kubernetes objects (any group but Dynamo's), as written."""
    out = []
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or str(doc.get("apiVersion", "")).startswith("nvidia.com/"):
            continue
        obj = copy.deepcopy(doc)
        if k8s_ns and doc["kind"] not in CLUSTER_SCOPED and not obj.get("metadata", {}).get("namespace"):
            obj.setdefault("metadata", {})["namespace"] = k8s_ns
        out.append(obj)
    return out


def load_graphs(path: str) -> list[Graph]:
    report = validate_file(path)
    for line in report.lines():
        print(line, file=sys.stderr)
    if report.errors:
        raise SystemExit(2)
    return report.graphs


def render_graphs(graphs: list[Graph], docs: list[Any], args: argparse.Namespace, known, warnings: list[str]
                  ) -> list[dict[str, Any]]:
    """Every graph's objects; shared ones (etcd, the discovery CRD) once."""
    objects = passthrough_objects(docs, args.namespace)
    maps = config_maps.collect(docs)  # a planner's config may be in one: which Deployments it scales
    for graph in graphs:
        models = load_models(docs, graph) if len(graphs) == 1 else []
        if len(graphs) > 1 and any(isinstance(d, dict) and d.get("kind") == DYNAMO_MODEL_KIND for d in docs):
            raise ValueError(f"{DYNAMO_MODEL_KIND} documents with several graphs in one file: render each graph "
                             "with its models from a file of its own")
        rendered = render(graph, args.namespace, args.etcd_endpoints, args.include_etcd, known, warnings,
                          args.discovery, args.include_crd, maps)
        add_sidecars(rendered, graph, models, contract.K8S_SYSTEM_PORT, names.k8s_name)  # DynamoModel adapters
        if getattr(args, "pod_monitors", False):  # a CRD's objects: only when asked for
            rendered += monitors.pod_monitors(graph, args.namespace or graph.metadata.namespace, warnings)
        objects += rendered
    objects = _once(objects)
    autoscalers.retarget(objects, warnings)  # no operator here, hence no scaling adapters to target
    return objects


def _once(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Objects every graph brings alike (the etcd, the discovery CRD) once; only identical ones."""
    out: list[dict[str, Any]] = []
    for obj in objects:
        if obj not in out:
            out.append(obj)
    return out


def main(args: argparse.Namespace) -> int:
    graphs = load_graphs(args.file)
    warnings: list[str] = []
    try:
        known = [parse_pull_secret(i) for i in args.pull_secrets]
        for path in args.pull_secrets_from:
            known += secrets_from_file(path)
        objects = render_graphs(graphs, load_documents(args.file), args, known, warnings)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in dict.fromkeys(warnings):  # a warning about the cluster is said once, not once per graph
        print(f"warning: {line}", file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0
