"""`python -m dynamo.deploy render FILE`: a DGD as plain Kubernetes objects for clusters
without the Dynamo operator: one ConfigMap with the graph-wide env, and per service a
Deployment and a Service, carrying the env and probes the operator would give its pods.
Discovery is etcd (`--etcd-endpoints`; `--include-etcd` adds a single-node etcd)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
import yaml

from dynamo.deploy import contract
from dynamo.deploy.model import EnvVar, Graph, Quantities, Service
from dynamo.deploy.dynamo_model import add_sidecars, load_models
from dynamo.deploy.run import load_graph
from dynamo.deploy.validate import load_documents

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.21"
_POD_PASSTHROUGH = ("initContainers", "nodeSelector", "tolerations", "affinity", "imagePullSecrets",
                    "serviceAccountName", "priorityClassName", "runtimeClassName", "schedulerName", "hostNetwork",
                    "hostIPC", "dnsPolicy", "shareProcessNamespace", "topologySpreadConstraints")
_CONTAINER_PASSTHROUGH = ("securityContext", "imagePullPolicy", "lifecycle", "stdin", "tty")


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _env_entries(envs: list[EnvVar] | None) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(e) for e in envs or []]


def _dedupe(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in entries}  # later entries win, as in the operator
    return list(by_name.values())


def _quantities(q: Quantities | None) -> dict[str, str]:
    if q is None:
        return {}
    out = {}
    for key, value in (("cpu", q.cpu), ("memory", q.memory), ("nvidia.com/gpu", q.gpu),
                       ("ephemeral-storage", q.ephemeral_storage)):
        if value not in (None, ""):
            out[key] = str(value)
    out.update({k: str(v) for k, v in (q.custom or {}).items()})
    return out


def _resources(svc: Service) -> dict[str, Any]:
    res = svc.resources
    out = dict(svc.container.resources or {})
    for key, q in (("requests", res.requests if res else None), ("limits", res.limits if res else None)):
        values = _quantities(q)
        if values:
            out[key] = {**out.get(key, {}), **values}
    return out


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _container(graph: Graph, name: str, svc: Service, port: int, k8s_ns: str | None) -> dict[str, Any]:
    main = svc.container
    injected = contract.injected_env(graph, svc, k8s_namespace=k8s_ns, discovery="etcd")
    shared = {"DYN_NAMESPACE", "DYN_PARENT_DGD_K8S_NAME", "DYN_DISCOVERY_BACKEND"}  # in the ConfigMap
    env = [{"name": k, "value": v} for k, v in injected.items() if k not in shared]
    if svc.dynamoNamespace:
        env.append({"name": "DYN_NAMESPACE", "value": svc.dynamoNamespace})
    env += [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP")]
    env += _env_entries(svc.envs) + _env_entries(main.env)
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": contract.k8s_name(graph.metadata.name, "env")}}]
    if svc.envFromSecret:
        env_from.append({"secretRef": {"name": svc.envFromSecret}})
    env_from += list(main.envFrom or [])
    port_name = "http" if contract.is_frontend(svc) else "system"
    out: dict[str, Any] = {"name": "main", "image": main.image}
    for key, value in (("command", main.command), ("args", main.args), ("workingDir", main.workingDir)):
        if value:
            out[key] = list(value) if isinstance(value, list) else value
    out.update({"env": _dedupe(env), "envFrom": env_from,
                "ports": [*(main.ports or []), {"name": port_name, "containerPort": port, "protocol": "TCP"}]})
    resources = _resources(svc)
    if resources:
        out["resources"] = resources
    for kind, probe in contract.default_probes(svc, http_port=port, system_port=port).items():
        out[f"{kind}Probe"] = probe
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        override = getattr(main, kind)
        if override is not None:
            out[kind] = msgspec.to_builtins(override)
    mounts = list(main.volumeMounts or [])
    if not (svc.sharedMemory and svc.sharedMemory.disabled):
        mounts.append({"name": "shared-memory", "mountPath": "/dev/shm"})
    mounts += [{"name": m.name, "mountPath": m.mountPoint or f"/mnt/{m.name}"} for m in svc.volumeMounts or []]
    if mounts:
        out["volumeMounts"] = mounts
    for key in _CONTAINER_PASSTHROUGH:
        value = getattr(main, key)
        if value is not None:
            out[key] = value
    return out


def _pod_spec(graph: Graph, name: str, svc: Service, port: int, k8s_ns: str | None) -> dict[str, Any]:
    pod = svc.extraPodSpec
    spec: dict[str, Any] = {
        "securityContext": {"fsGroup": contract.FS_GROUP, **((pod.securityContext if pod else None) or {})},
        "terminationGracePeriodSeconds": (pod.terminationGracePeriodSeconds if pod else None)
        or contract.TERMINATION_GRACE_SECONDS,
        "containers": [_container(graph, name, svc, port, k8s_ns), *((pod.containers if pod else None) or [])],
    }
    volumes = list((pod.volumes if pod else None) or [])
    if not (svc.sharedMemory and svc.sharedMemory.disabled):
        size = (svc.sharedMemory.size if svc.sharedMemory else None) or contract.SHARED_MEMORY
        volumes.append({"name": "shared-memory", "emptyDir": {"medium": "Memory", "sizeLimit": size}})
    volumes += [{"name": m.name, "persistentVolumeClaim": {"claimName": m.name}} for m in svc.volumeMounts or []]
    if volumes:
        spec["volumes"] = volumes
    for key in _POD_PASSTHROUGH:
        value = getattr(pod, key) if pod else None
        if value is not None:
            spec[key] = value
    return spec


def service_objects(graph: Graph, name: str, svc: Service, k8s_ns: str | None) -> list[dict[str, Any]]:
    obj_name = contract.k8s_name(graph.metadata.name, name)
    port = contract.FRONTEND_PORT if contract.is_frontend(svc) else contract.K8S_SYSTEM_PORT
    selector = {"nvidia.com/dynamo-graph-deployment-name": contract.k8s_name(graph.metadata.name),
                "nvidia.com/dynamo-component": contract.k8s_name(name)}
    labels = {**(svc.labels or {}), **selector, "nvidia.com/dynamo-component-type": svc.componentType or "worker",
              "app.kubernetes.io/name": obj_name}
    if svc.subComponentType:
        labels["nvidia.com/dynamo-sub-component-type"] = svc.subComponentType
    pod_meta = svc.extraPodMetadata
    template_meta: dict[str, Any] = {"labels": {**labels, **((pod_meta.labels if pod_meta else None) or {})}}
    annotations = {**(svc.annotations or {}), **((pod_meta.annotations if pod_meta else None) or {})}
    if annotations:
        template_meta["annotations"] = annotations
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(obj_name, k8s_ns, labels),
        "spec": {"replicas": svc.replica_count, "selector": {"matchLabels": selector},
                 "template": {"metadata": template_meta, "spec": _pod_spec(graph, name, svc, port, k8s_ns)}},
    }
    port_name = "http" if contract.is_frontend(svc) else "system"
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(obj_name, k8s_ns, labels),
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]},
    }
    return [deployment, service]


def etcd_objects(k8s_ns: str | None) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": "etcd"}
    command = ["etcd", "--data-dir=/var/lib/etcd", "--listen-client-urls=http://0.0.0.0:2379",
               "--advertise-client-urls=http://etcd:2379"]
    container = {"name": "etcd", "image": ETCD_IMAGE, "command": command,
                 "ports": [{"name": "client", "containerPort": 2379, "protocol": "TCP"}],
                 "readinessProbe": {"httpGet": {"path": "/health", "port": "client"}, "periodSeconds": 5},
                 "volumeMounts": [{"name": "data", "mountPath": "/var/lib/etcd"}]}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("etcd", k8s_ns, labels),
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels},
                               "spec": {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("etcd", k8s_ns, labels),
         "spec": {"selector": labels, "ports": [{"name": "client", "port": 2379, "targetPort": "client"}]}},
    ]


def render(graph: Graph, k8s_namespace: str | None = None, etcd_endpoints: str = "http://etcd:2379",
           include_etcd: bool = False) -> list[dict[str, Any]]:
    k8s_ns = k8s_namespace or graph.metadata.namespace
    first = next(iter(graph.spec.services.values()))
    shared = contract.injected_env(graph, first, k8s_namespace=k8s_ns, discovery="etcd")
    data = {k: shared[k] for k in ("DYN_NAMESPACE", "DYN_PARENT_DGD_K8S_NAME", "DYN_DISCOVERY_BACKEND")}
    data["ETCD_ENDPOINTS"] = etcd_endpoints
    data.update(contract.env_list(graph.spec.envs))
    labels = {"nvidia.com/dynamo-graph-deployment-name": contract.k8s_name(graph.metadata.name)}
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": _meta(contract.k8s_name(graph.metadata.name, "env"), k8s_ns, labels),
                                      "data": data}]
    for pvc in graph.spec.pvcs or []:
        if pvc.create:
            spec: dict[str, Any] = {"accessModes": [pvc.volumeAccessMode or "ReadWriteMany"],
                                    "resources": {"requests": {"storage": pvc.size or "100Gi"}}}
            if pvc.storageClass:
                spec["storageClassName"] = pvc.storageClass
            objects.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                            "metadata": _meta(pvc.name, k8s_ns, labels), "spec": spec})
    for name, svc in graph.spec.services.items():
        if svc.multinode and svc.multinode.nodeCount > 1:
            print(f"warning: {name}: multinode is not rendered (one pod per replica)", file=sys.stderr)
        objects += service_objects(graph, name, svc, k8s_ns)
    if include_etcd:
        objects += etcd_objects(k8s_ns)
    return objects


def main(args: argparse.Namespace) -> int:
    graph = load_graph(args.file)
    try:
        models = load_models(load_documents(args.file), graph)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    objects = render(graph, args.namespace, args.etcd_endpoints, args.include_etcd)
    add_sidecars(objects, graph, models, contract.K8S_SYSTEM_PORT, contract.k8s_name)  # DynamoModel adapters
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False, default_flow_style=False))
    return 0
