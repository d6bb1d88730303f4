"""A `nvidia.com/v1alpha1` DynamoGraphDeployment, partial or whole (`spec.overrides.dgd` as pre-1.0 guides
write it), in the `nvidia.com/v1beta1` shape the profiler generates, mapped as Dynamo's operator converts
between its two served versions (the reverse of `dynamo.deploy.v1beta1.convert`): `spec.services` map ->
`spec.components` list, `componentType` + `subComponentType` -> `type`, `extraPodSpec.mainContainer` -> the
pod template's `main` container (`envs`, `envFromSecret`, `resources` and the probes go into it),
`extraPodMetadata` -> `podTemplate.metadata`, `sharedMemory` -> `sharedMemorySize`, PVC `volumeMounts` ->
native volumes and mounts (`useAsCompilationCache` -> `compilationCache`), `spec.envs` -> `spec.env`. Only
what the input sets is written, so a partial stays partial. A field v1beta1 has no place for is an error
that says so, never dropped quietly."""

from __future__ import annotations

from typing import Any

from dynamo.deploy.model import API_VERSION_V1BETA1, GPU_RESOURCE
from dynamo.deploy.v1beta1 import MAIN_CONTAINER as MAIN  # the container the operator injects into

WORKER_TYPES = ("worker", "prefill", "decode")  # v1beta1 component types of the workers
# Service fields of v1alpha1 that v1beta1 components carry under the same name.
SAME = ("replicas", "multinode", "globalDynamoNamespace", "modelRef", "eppConfig", "topologyConstraint")
NO_V1BETA1 = ("dynamoNamespace", "ingress", "autoscaling", "gpuMemoryService", "failover", "checkpoint",
              "frontendSidecar")
# Consumed by the mapping below; anything else a service sets passes through for validation to judge.
MAPPED = ("componentType", "subComponentType", "sharedMemory", "scalingAdapter", "extraPodSpec", "extraPodMetadata",
          "annotations", "labels", "envs", "envFromSecret", "resources", "livenessProbe", "readinessProbe",
          "volumeMounts")


def as_v1beta1(doc: dict[str, Any], where: str = "spec.overrides.dgd") -> dict[str, Any]:
    spec = dict(doc.get("spec") or {})
    services = spec.pop("services", None) or {}
    if not isinstance(services, dict):
        raise ValueError(f"{where}.spec.services: a map of services by name")
    out: dict[str, Any] = {}
    if services:
        out["components"] = [component(name, svc, f"{where}.spec.services.{name}") for name, svc in services.items()]
    if "envs" in spec:
        out["env"] = spec.pop("envs")
    _check_pvcs(spec.pop("pvcs", None), f"{where}.spec.pvcs")
    out.update(spec)
    return {**{k: v for k, v in doc.items() if k != "spec"}, "apiVersion": API_VERSION_V1BETA1, "spec": out}


def _check_pvcs(pvcs: Any, where: str) -> None:
    """v1beta1 names a PVC in a pod volume (written from the services' `volumeMounts`); it has no list of PVCs
    for the operator to create."""
    for pvc in pvcs or []:
        if isinstance(pvc, dict) and pvc.get("create"):
            raise ValueError(f"{where}: PVC {pvc.get('name')!r} with create: true has no nvidia.com/v1beta1 form "
                             "(create the PVC first; the services' volumeMounts name it)")


def component(name: str, svc: Any, where: str) -> dict[str, Any]:
    """One v1alpha1 service as a v1beta1 component (only the fields it sets)."""
    if not isinstance(svc, dict):
        raise ValueError(f"{where}: expected a map")
    homeless = [k for k in NO_V1BETA1 if k in svc]
    if homeless:
        raise ValueError(f"{where}.{homeless[0]}: has no nvidia.com/v1beta1 form; write the override as "
                         "nvidia.com/v1beta1 (spec.components) without it")
    comp: dict[str, Any] = {"name": name}
    kind = svc.get("subComponentType") or svc.get("componentType")
    if kind:
        comp["type"] = "worker" if kind == "main" else kind
    comp.update({k: svc[k] for k in SAME if k in svc})
    comp.update({k: v for k, v in svc.items() if k not in SAME and k not in MAPPED})
    shared = svc.get("sharedMemory")
    if isinstance(shared, dict) and (shared.get("disabled") or shared.get("size")):
        comp["sharedMemorySize"] = "0" if shared.get("disabled") else shared["size"]
    adapter = svc.get("scalingAdapter")
    if isinstance(adapter, dict) and adapter.get("enabled") and not adapter.get("disable"):
        comp["scalingAdapter"] = {}  # v1beta1: present is opted in
    template = _pod_template(svc, comp, where)
    if template:
        comp["podTemplate"] = template
    return comp


def _pod_template(svc: dict[str, Any], comp: dict[str, Any], where: str) -> dict[str, Any]:
    pod = dict(svc.get("extraPodSpec") or {})
    main = dict(pod.pop("mainContainer", None) or {})
    sidecars = list(pod.pop("containers", None) or [])
    _into_main(svc, main, where)
    for mount in svc.get("volumeMounts") or []:
        _pvc_mount(mount, main, pod, comp, f"{where}.volumeMounts")
    main = {"name": MAIN, **{k: v for k, v in main.items() if k != "name"}}  # whatever v1alpha1 called it
    containers = ([main] if len(main) > 1 else []) + sidecars
    if containers:
        pod["containers"] = containers
    meta = {**(svc.get("extraPodMetadata") or {})}
    for key in ("annotations", "labels"):  # a service's own go on its pods, beside extraPodMetadata's
        if svc.get(key):
            meta[key] = {**svc[key], **meta.get(key, {})}
    return {**({"metadata": meta} if meta else {}), **({"spec": pod} if pod else {})}


def _into_main(svc: dict[str, Any], main: dict[str, Any], where: str) -> None:
    """What v1alpha1 sets beside the main container and the operator puts into it."""
    env = list(svc.get("envs") or []) + list(main.get("env") or [])
    if env:  # the container's own entries win, as in the operator's merged list
        main["env"] = list({e.get("name"): e for e in env if isinstance(e, dict)}.values())
    if svc.get("envFromSecret"):
        main["envFrom"] = [{"secretRef": {"name": svc["envFromSecret"]}}, *(main.get("envFrom") or [])]
    resources = _resources(svc.get("resources"), main.get("resources"), f"{where}.resources")
    if resources:
        main["resources"] = resources
    for probe in ("livenessProbe", "readinessProbe"):
        if svc.get(probe) is not None:
            main.setdefault(probe, svc[probe])


def _resources(res: Any, native: Any, where: str) -> dict[str, Any]:
    """A service's `resources` ({requests, limits} of cpu, memory, gpu, ...) merged into the container's."""
    out = dict(native or {})
    if not isinstance(res, dict):
        return out
    for key in ("requests", "limits"):
        q = res.get(key) or {}
        if q.get("gpuType"):
            raise ValueError(f"{where}.{key}.gpuType: has no nvidia.com/v1beta1 form (select the nodes with "
                             "podTemplate.spec.nodeSelector)")
        values = {(GPU_RESOURCE if k == "gpu" else k): str(v) for k, v in q.items()
                  if k not in ("custom", "gpuType") and v not in (None, "")}
        values.update({k: str(v) for k, v in (q.get("custom") or {}).items()})
        if values:
            out[key] = {**(out.get(key) or {}), **values}
    if res.get("claims"):
        out["claims"] = res["claims"]
    return out


def _pvc_mount(mount: Any, main: dict[str, Any], pod: dict[str, Any], comp: dict[str, Any], where: str) -> None:
    if not isinstance(mount, dict) or not mount.get("name"):
        raise ValueError(f"{where}: each entry needs a name (the PVC's)")
    if mount.get("useAsCompilationCache"):
        comp["compilationCache"] = {"pvcName": mount["name"],
                                    **({"mountPath": mount["mountPoint"]} if mount.get("mountPoint") else {})}
        return
    if not mount.get("mountPoint"):
        raise ValueError(f"{where}: PVC {mount['name']!r} needs a mountPoint")
    pod.setdefault("volumes", []).append({"name": mount["name"], "persistentVolumeClaim": {"claimName": mount["name"]}})
    main.setdefault("volumeMounts", []).append({"name": mount["name"], "mountPath": mount["mountPoint"]})
