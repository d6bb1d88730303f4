"""A DGD as plain Kubernetes objects for clusters
without the Dynamo operator: one ConfigMap with the discovery env every pod shares (its checksum on each
pod template), and per service a Deployment and a Service, carrying the env (the graph's `envs` merged
in), probes and rollout strategy the operator would give its pods (`rollout.py`).
Discovery is etcd (`--etcd-endpoints`; `--include-etcd` adds a single-node etcd), or Kubernetes-native
(`--discovery kubernetes`, or the DGD's `nvidia.com/dynamo-discovery-backend: kubernetes`; see
kube_discovery.py)."""

from __future__ import annotations

from typing import Any

import msgspec

from dynamo.deploy import contract
from dynamo.deploy.commands import MODEL_FLAGS, flag_value, parse_command
from dynamo.deploy.model import GPU_RESOURCE, EnvVar, Graph, Quantities, Service
from dynamo.deploy import ingress, kube_discovery, multinode, names, planner_scaling, rollout, scrape
from dynamo.deploy.pull_secrets import pull_secrets

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.21"
DISCOVERY_ANNOTATION = "nvidia.com/dynamo-discovery-backend"
DEFAULT_ETCD = "http://etcd:2379"
_POD_PASSTHROUGH = ("initContainers", "nodeSelector", "tolerations", "affinity",
                    "serviceAccountName", "priorityClassName", "runtimeClassName", "schedulerName", "hostNetwork",
                    "hostIPC", "dnsPolicy", "shareProcessNamespace", "topologySpreadConstraints", "resourceClaims")
_CONTAINER_PASSTHROUGH = ("securityContext", "imagePullPolicy", "lifecycle", "stdin", "tty")
# The operator's discovery env entries, the same in every pod of the graph: in its ConfigMap, not each container.
GRAPH_ENV = ("DYN_NAMESPACE", "DYN_PARENT_DGD_K8S_NAME", "DYN_PARENT_DGD_K8S_NAMESPACE", "DYN_DISCOVERY_BACKEND")


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


def container_resources(svc: Service) -> dict[str, Any]:
    res = svc.resources
    native = svc.container.resources or {}
    out = {k: dict(v) for k, v in native.items() if isinstance(v, dict)}  # requests / limits
    # `claims` is a list (DRA claim names), carried like the pod's `resourceClaims` they refer to.
    claims = _claims(native.get("claims"), res.claims if res else None)
    if claims:
        out["claims"] = claims
    for key, q in (("requests", res.requests if res else None), ("limits", res.limits if res else None)):
        values = _quantities(q)
        if values:
            out[key] = {**out.get(key, {}), **values}
    # GPUs are an extended resource: Kubernetes requires a limit (and request == limit).
    requested = out.get("requests", {}).get(GPU_RESOURCE)
    if requested is not None and GPU_RESOURCE not in out.get("limits", {}):
        out.setdefault("limits", {})[GPU_RESOURCE] = requested
    return out


def _claims(*sources: Any) -> list[Any]:
    """The main container's DRA claims: its own, then the v1alpha1 service's `resources.claims`
    (which the operator puts on the main container), each name once (Kubernetes keys them by name)."""
    out, seen = [], set()
    for source in sources:
        for claim in source if isinstance(source, list) else []:
            key = claim.get("name") if isinstance(claim, dict) else repr(claim)
            if key not in seen:
                seen.add(key)
                out.append(claim)
    return out


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _container(graph: Graph, name: str, svc: Service, port: int, k8s_ns: str | None,
               discovery: str = "etcd") -> dict[str, Any]:
    main = svc.container
    # `port` is the pod's: the frontend's HTTP port or a worker's system port, as the manifest sets it.
    injected = contract.injected_env(graph, svc, k8s_namespace=k8s_ns, discovery=discovery,
                                     system_port=port, http_port=port)
    env = [{"name": k, "value": v} for k, v in injected.items() if k not in GRAPH_ENV]
    if svc.dynamoNamespace:
        env.append({"name": "DYN_NAMESPACE", "value": svc.dynamoNamespace})
    env += [_field_env("POD_NAME", "metadata.name"), _field_env("POD_NAMESPACE", "metadata.namespace"),
            _field_env("POD_IP", "status.podIP")]
    if discovery == "kubernetes":  # the owner of the pod's DynamoWorkerMetadata
        env.append(_field_env("POD_UID", "metadata.uid"))
    if svc.componentType == "planner":  # no DGD here: it scales the graph's Deployments
        env.append({"name": planner_scaling.SELECTOR_ENV,
                    "value": planner_scaling.selector(names.k8s_name(graph.metadata.name))})
    # The graph's `envs` merged into the component's env, as the operator does (a service's entry of the same
    # name wins): an edit changes every pod template, so `kubectl apply` rolls them all.
    env += _env_entries(graph.spec.envs) + _env_entries(svc.envs) + _env_entries(main.env)
    env_from: list[dict[str, Any]] = [{"configMapRef": {"name": names.k8s_name(graph.metadata.name, "env")}}]
    if svc.envFromSecret:
        env_from.append({"secretRef": {"name": svc.envFromSecret}})
    env_from += list(main.envFrom or [])
    port_name = "http" if contract.is_frontend(svc) else "system"
    out: dict[str, Any] = {"name": "main", "image": main.image}
    command, args, _ = contract.command_of(svc)  # the operator's default for a frontend / planner
    for key, value in (("command", command), ("args", args), ("workingDir", main.workingDir)):
        if value:
            out[key] = list(value) if isinstance(value, list) else value
    ports = [p for p in main.ports or [] if not (isinstance(p, dict) and p.get("name") == port_name)]
    ports.append({"name": port_name, "containerPort": port, "protocol": "TCP"})
    http_port = contract.kserve_http_port(svc)  # a KServe gRPC frontend: its HTTP routes on their own port
    if http_port is not None:
        ports.append({"name": "metrics", "containerPort": http_port, "protocol": "TCP"})
    out.update({"env": _dedupe(env), "envFrom": env_from, "ports": ports})
    resources = container_resources(svc)
    if resources:
        out["resources"] = resources
    for kind, probe in contract.default_probes(svc, http_port=http_port or port, system_port=port).items():
        out[f"{kind}Probe"] = probe
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        override = getattr(main, kind)
        if override is not None:
            out[kind] = msgspec.to_builtins(override)
    models = model_paths(svc)
    mounts = [_read_only_if_model(dict(m), models) if isinstance(m, dict) else m for m in main.volumeMounts or []]
    if not (svc.sharedMemory and svc.sharedMemory.disabled):
        mounts.append({"name": "shared-memory", "mountPath": "/dev/shm"})
    mounts += [_read_only_if_model({"name": m.name, "mountPath": m.mountPoint or f"/mnt/{m.name}"}, models)
               for m in svc.volumeMounts or []]
    if mounts:
        out["volumeMounts"] = mounts
    for key in _CONTAINER_PASSTHROUGH:
        value = getattr(main, key)
        if value is not None:
            out[key] = value
    return out


def model_paths(svc: Service) -> list[str]:
    """Model arguments of the service's workers (paths into a model cache, or HF ids)."""
    out = []
    for inv in parse_command(*contract.command_of(svc)[:2]).invocations:
        flags = MODEL_FLAGS.get(inv.module)
        value = flag_value(inv.args, flags[0]) if flags else None
        if value:
            out.append(value)
    return out


def _read_only_if_model(mount: dict[str, Any], models: list[str]) -> dict[str, Any]:
    """A volume the worker loads its model from by path is a model cache: mount it read-only."""
    base = str(mount.get("mountPath", "")).rstrip("/")
    if base and "readOnly" not in mount and any(m == base or m.startswith(base + "/") for m in models):
        mount["readOnly"] = True
    return mount


def _pod_spec(graph: Graph, name: str, svc: Service, port: int, k8s_ns: str | None,
              known_secrets: list[tuple[str, str]], discovery: str = "etcd") -> dict[str, Any]:
    pod = svc.extraPodSpec
    spec: dict[str, Any] = {
        "securityContext": {"fsGroup": contract.FS_GROUP, **((pod.securityContext if pod else None) or {})},
        "terminationGracePeriodSeconds": (pod.terminationGracePeriodSeconds if pod else None)
        or contract.TERMINATION_GRACE_SECONDS,
        "containers": [_container(graph, name, svc, port, k8s_ns, discovery),
                       *((pod.containers if pod else None) or [])],
    }
    if svc.componentType == "planner":  # its own account: only it may scale the graph (and it discovers too)
        spec["serviceAccountName"] = planner_scaling.account_name(names.k8s_name(graph.metadata.name))
    elif discovery == "kubernetes":  # allowed to read EndpointSlices and write its DynamoWorkerMetadata
        spec["serviceAccountName"] = kube_discovery.account_name(names.k8s_name(graph.metadata.name))
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
    secrets = pull_secrets(svc, known_secrets)
    if secrets:
        spec["imagePullSecrets"] = secrets
    return spec


def service_objects(graph: Graph, name: str, svc: Service, k8s_ns: str | None,
                    known_secrets: list[tuple[str, str]] = (), warnings: list[str] | None = None,
                    discovery: str = "etcd", graph_annotations: dict[str, str] | None = None
                    ) -> list[dict[str, Any]]:
    """The service's Deployment (or LeaderWorkerSet), Service and ingress objects; `graph_annotations`
    go on its pod template (the restart id, the ConfigMap's checksum: `rollout.pod_annotations`)."""
    obj_name = names.k8s_name(graph.metadata.name, name)
    port = contract.pod_port(svc, graph)  # the manifest's own HTTP / system port, else 8000 / 9090
    selector = {"nvidia.com/dynamo-graph-deployment-name": names.k8s_name(graph.metadata.name),
                "nvidia.com/dynamo-component": names.k8s_name(name)}
    dyn_ns = svc.dynamoNamespace or contract.dynamo_namespace(graph, k8s_ns)
    labels = {**(svc.labels or {}), **selector, "nvidia.com/dynamo-component-type": svc.componentType or "worker",
              "nvidia.com/dynamo-namespace": names.label_value(dyn_ns), "app.kubernetes.io/name": obj_name}
    if svc.subComponentType:
        labels["nvidia.com/dynamo-sub-component-type"] = svc.subComponentType
    pod_meta = svc.extraPodMetadata
    template_meta: dict[str, Any] = {"labels": {**labels, **scrape.pod_labels(graph),
                                                **((pod_meta.labels if pod_meta else None) or {})}}
    annotations = {**scrape.pod_annotations(graph, port), **(svc.annotations or {}),
                   **((pod_meta.annotations if pod_meta else None) or {}), **(graph_annotations or {})}
    if annotations:
        template_meta["annotations"] = annotations
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {**_meta(obj_name, k8s_ns, labels), "annotations": {planner_scaling.NAME_ANNOTATION: name}},
        "spec": {"replicas": svc.replica_count, "selector": {"matchLabels": selector},
                 "template": {"metadata": template_meta,
                              "spec": _pod_spec(graph, name, svc, port, k8s_ns, list(known_secrets),
                                                discovery)}},
    }
    strategy = rollout.strategy(svc, graph)  # the operator's deployment-strategy annotations
    if strategy is not None:
        deployment["spec"]["strategy"] = strategy
    _warn_claims(name, svc, warnings)
    port_name = "http" if contract.is_frontend(svc) else "system"
    service_labels = {**labels, **(kube_discovery.DISCOVERY_LABELS if discovery == "kubernetes" else {})}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(obj_name, k8s_ns, service_labels),
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]},
    }
    exposed = ingress.objects(graph, name, svc, service["metadata"], port, warnings)
    if multinode.node_count(svc) > 1:  # a group of pods per replica; the Service reaches the leaders
        group = multinode.lws_object(deployment["metadata"], svc, deployment["spec"]["template"],
                                     warnings if warnings is not None else [], name)
        service["spec"]["selector"] = {**selector, multinode.LEADER_INDEX_LABEL: "0"}
        return [group, service, *exposed]
    return [deployment, service, *exposed]


def _warn_claims(name: str, svc: Service, warnings: list[str] | None) -> None:
    # The claims are valid pod fields, but what they name comes from elsewhere in the file or cluster.
    if svc.extraPodSpec is not None and svc.extraPodSpec.resourceClaims and warnings is not None:
        warnings.append(f"service {name}: resourceClaims rendered as written; the cluster needs a DRA driver and "
                        "the ResourceClaimTemplates they name (e.g. a ComputeDomain's channel), which `render` "
                        "does not emit")


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


def render(graph: Graph, k8s_namespace: str | None = None, etcd_endpoints: str = DEFAULT_ETCD,
           include_etcd: bool = False, known_secrets: list[tuple[str, str]] = (),
           warnings: list[str] | None = None, discovery: str | None = None,
           include_crd: bool = False, maps: dict[str, dict[str, bytes]] | None = None) -> list[dict[str, Any]]:
    """The graph as plain Kubernetes objects; `warnings` collects what could not be rendered.
    `discovery` (etcd, kubernetes) defaults to the DGD's discovery annotation, else etcd; `maps`: the file's
    ConfigMaps (a planner's config may be in one)."""
    warnings = warnings if warnings is not None else []
    k8s_ns = k8s_namespace or graph.metadata.namespace
    discovery = discovery or _discovery_of(graph, warnings)
    first = next(iter(graph.spec.services.values()))
    shared = contract.injected_env(graph, first, k8s_namespace=k8s_ns, discovery=discovery)
    data = {k: shared[k] for k in GRAPH_ENV}
    data["DYN_NAMESPACE"] = contract.dynamo_namespace(graph, k8s_ns)  # a service's dynamoNamespace is its own entry
    if discovery == "etcd":
        data["ETCD_ENDPOINTS"] = etcd_endpoints
    labels = {"nvidia.com/dynamo-graph-deployment-name": names.k8s_name(graph.metadata.name)}
    objects: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "ConfigMap",
                                      "metadata": _meta(names.k8s_name(graph.metadata.name, "env"), k8s_ns, labels),
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
        objects += service_objects(graph, name, svc, k8s_ns, known_secrets, warnings, discovery,
                                   rollout.pod_annotations(graph, data))
    objects += _planner_rbac(objects, graph, k8s_ns, labels, warnings, maps)
    if discovery == "kubernetes":
        planners = [o["metadata"]["name"] for o in objects if o["kind"] == "ServiceAccount"]
        return objects + _kubernetes_discovery(graph, k8s_ns, labels, include_crd, warnings, planners)
    if include_etcd:
        objects += etcd_objects(k8s_ns)
    elif etcd_endpoints == DEFAULT_ETCD:
        warnings.append(f"the graph discovers through etcd at {etcd_endpoints}: deploy one there, or pass "
                        "--include-etcd / --etcd-endpoints (components exit with a clear error without it)")
    return objects


def _planner_rbac(objects: list[dict[str, Any]], graph: Graph, k8s_ns: str | None, labels: dict[str, str],
                  warnings: list[str], maps: dict[str, dict[str, bytes]] | None = None) -> list[dict[str, Any]]:
    """Leave a rendered planner able to scale the graph (see `planner_scaling`), and the replicas of the
    Deployments it scales to it: they carry no `spec.replicas`, as those an HPA manages (set, every
    `kubectl apply` would reset the planner's count; a new Deployment starts at 1)."""
    planners = [o for o in objects if o["kind"] == "Deployment"
                and o["metadata"]["labels"].get("nvidia.com/dynamo-component-type") == "planner"]
    if not planners:
        return []
    groups = [o["metadata"]["name"] for o in objects if o["kind"] == "LeaderWorkerSet"]
    if groups:
        warnings.append(f"the planner scales Deployments here; the multinode groups {', '.join(groups)} "
                        "(LeaderWorkerSets) keep their replicas")
    accounts = [o["spec"]["template"]["spec"].get("serviceAccountName", "default") for o in planners]
    targets = planner_scaling.scale_targets(graph, maps)
    for obj in objects:
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] in targets[0]:
            obj["spec"].pop("replicas", None)
    return planner_scaling.rbac_objects(names.k8s_name(graph.metadata.name), k8s_ns, labels, accounts, targets)


def _discovery_of(graph: Graph, warnings: list[str]) -> str:
    backend = (graph.metadata.annotations or {}).get(DISCOVERY_ANNOTATION, "etcd")
    if backend not in kube_discovery.DISCOVERY_BACKENDS:
        warnings.append(f"{DISCOVERY_ANNOTATION}: {backend} discovery is not rendered; the rendered graph "
                        "discovers through etcd")
        return "etcd"
    return backend


def _kubernetes_discovery(graph: Graph, k8s_ns: str | None, labels: dict[str, str], include_crd: bool,
                          warnings: list[str], planners: list[str] = ()) -> list[dict[str, Any]]:
    """The service account, Role and RoleBinding discovery needs (bound to the planner's own account
    too), and the CRD when asked for."""
    own = [p.serviceAccountName for s in graph.spec.services.values()
           if (p := s.extraPodSpec) is not None and p.serviceAccountName] + list(planners)
    objects = kube_discovery.rbac_objects(names.k8s_name(graph.metadata.name), k8s_ns, labels, own)
    if include_crd:
        objects.append(kube_discovery.crd_object())
    else:
        warnings.append("kubernetes discovery needs the DynamoWorkerMetadata CRD (nvidia.com/v1alpha1), which "
                        "Dynamo's CRDs install: pass --include-crd to render it")
    return objects
