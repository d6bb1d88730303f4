"""Typed model of the DynamoGraphDeployment (`nvidia.com/v1alpha1`) fields we support;
`nvidia.com/v1beta1` documents are checked by `v1beta1.py` and converted into this model.

`check(raw)` walks a parsed YAML document against these structs and returns *every*
problem with its path (`spec.services.Worker.replicas: expected int, got str`), unknown
fields included; `load(raw)` then converts a clean document into the structs. Fields of
Kubernetes core types that we only pass through (affinity, volumes, ...) are `Any`.
"""

from __future__ import annotations

from typing import Any, Literal, Union

import msgspec

from dynamo.deploy.schema_walk import check_struct

API_VERSION = "nvidia.com/v1alpha1"
API_VERSION_V1BETA1 = "nvidia.com/v1beta1"
GPU_RESOURCE = "nvidia.com/gpu"
KIND = "DynamoGraphDeployment"
MAX_SERVICES = 25


class Base(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    pass


class EnvVar(Base):
    name: str
    value: Union[str, None] = None
    valueFrom: Union[dict[str, Any], None] = None


class Quantities(Base, rename={"ephemeral_storage": "ephemeral-storage"}):
    cpu: Union[str, int, float, None] = None
    memory: Union[str, int, None] = None
    gpu: Union[str, int, None] = None
    gpuType: Union[str, None] = None
    ephemeral_storage: Union[str, int, None] = None
    custom: Union[dict[str, Union[str, int]], None] = None


class Resources(Base):
    requests: Union[Quantities, None] = None
    limits: Union[Quantities, None] = None
    claims: Union[list[Any], None] = None


class HTTPGet(Base):
    path: str = "/"
    port: Union[int, str] = 80
    host: Union[str, None] = None
    scheme: Union[Literal["HTTP", "HTTPS"], None] = None
    httpHeaders: Union[list[Any], None] = None


class Probe(Base):
    httpGet: Union[HTTPGet, None] = None
    exec: Union[dict[str, list[str]], None] = None
    tcpSocket: Union[dict[str, Any], None] = None
    grpc: Union[dict[str, Any], None] = None
    initialDelaySeconds: Union[int, None] = None
    periodSeconds: Union[int, None] = None
    timeoutSeconds: Union[int, None] = None
    failureThreshold: Union[int, None] = None
    successThreshold: Union[int, None] = None
    terminationGracePeriodSeconds: Union[int, None] = None


class Container(Base):
    name: Union[str, None] = None
    image: Union[str, None] = None
    command: Union[list[str], None] = None
    args: Union[list[str], None] = None
    workingDir: Union[str, None] = None
    env: Union[list[EnvVar], None] = None
    envFrom: Union[list[Any], None] = None
    ports: Union[list[Any], None] = None
    resources: Union[dict[str, Any], None] = None
    volumeMounts: Union[list[Any], None] = None
    securityContext: Union[dict[str, Any], None] = None
    imagePullPolicy: Union[Literal["Always", "IfNotPresent", "Never"], None] = None
    livenessProbe: Union[Probe, None] = None
    readinessProbe: Union[Probe, None] = None
    startupProbe: Union[Probe, None] = None
    lifecycle: Union[dict[str, Any], None] = None
    stdin: Union[bool, None] = None
    stdinOnce: Union[bool, None] = None
    tty: Union[bool, None] = None
    restartPolicy: Union[str, None] = None
    resizePolicy: Union[list[Any], None] = None
    volumeDevices: Union[list[Any], None] = None
    terminationMessagePath: Union[str, None] = None
    terminationMessagePolicy: Union[str, None] = None


class ExtraPodSpec(Base):
    """A PodSpec whose main container is `mainContainer`; the rest passes through."""

    mainContainer: Union[Container, None] = None
    containers: Union[list[Any], None] = None
    initContainers: Union[list[Any], None] = None
    volumes: Union[list[Any], None] = None
    nodeSelector: Union[dict[str, str], None] = None
    tolerations: Union[list[Any], None] = None
    affinity: Union[dict[str, Any], None] = None
    imagePullSecrets: Union[list[Any], None] = None
    serviceAccountName: Union[str, None] = None
    securityContext: Union[dict[str, Any], None] = None
    terminationGracePeriodSeconds: Union[int, None] = None
    priorityClassName: Union[str, None] = None
    runtimeClassName: Union[str, None] = None
    schedulerName: Union[str, None] = None
    hostNetwork: Union[bool, None] = None
    hostIPC: Union[bool, None] = None
    dnsPolicy: Union[str, None] = None
    shareProcessNamespace: Union[bool, None] = None
    topologySpreadConstraints: Union[list[Any], None] = None
    resourceClaims: Union[list[Any], None] = None  # DRA (e.g. a ComputeDomain's IMEX channel)


class PodMetadata(Base):
    annotations: Union[dict[str, str], None] = None
    labels: Union[dict[str, str], None] = None


class Multinode(Base):
    nodeCount: int = 1


class SharedMemory(Base):
    disabled: bool = False
    size: Union[str, None] = None


class VolumeMount(Base):
    name: str
    mountPoint: Union[str, None] = None
    useAsCompilationCache: Union[bool, None] = None


class ScalingAdapter(Base):
    """Dynamo's operators before 1.2 give every service an adapter unless `disable: true`; later ones only
    with `enabled: true` (v1beta1: `scalingAdapter` present at all). Both spellings are read."""

    disable: bool = False
    enabled: Union[bool, None] = None


class IngressTLS(Base):
    secretName: Union[str, None] = None


class Ingress(Base):
    """IngressSpec: expose a service outside the cluster (`render` writes the Ingress or VirtualService the
    operator would; `ingress.py`)."""

    enabled: bool = False
    host: Union[str, None] = None
    useVirtualService: bool = False
    virtualServiceGateway: Union[str, None] = None
    hostPrefix: Union[str, None] = None
    hostSuffix: Union[str, None] = None
    annotations: Union[dict[str, str], None] = None
    labels: Union[dict[str, str], None] = None
    tls: Union[IngressTLS, None] = None
    ingressControllerClassName: Union[str, None] = None


class Service(Base):
    """DynamoComponentDeploymentSharedSpec: one entry of `spec.services`."""

    componentType: Union[Literal["frontend", "worker", "planner", "main", "epp"], None] = None
    subComponentType: Union[Literal["prefill", "decode"], None] = None
    replicas: Union[int, None] = None
    resources: Union[Resources, None] = None
    envs: Union[list[EnvVar], None] = None
    envFromSecret: Union[str, None] = None
    extraPodSpec: Union[ExtraPodSpec, None] = None
    extraPodMetadata: Union[PodMetadata, None] = None
    annotations: Union[dict[str, str], None] = None
    labels: Union[dict[str, str], None] = None
    dynamoNamespace: Union[str, None] = None
    globalDynamoNamespace: Union[bool, None] = None
    multinode: Union[Multinode, None] = None
    sharedMemory: Union[SharedMemory, None] = None
    livenessProbe: Union[Probe, None] = None
    readinessProbe: Union[Probe, None] = None
    volumeMounts: Union[list[VolumeMount], None] = None
    ingress: Union[Ingress, None] = None
    modelRef: Union[dict[str, Any], None] = None
    scalingAdapter: Union[ScalingAdapter, None] = None
    autoscaling: Union[dict[str, Any], None] = None
    # Operator-only features (GAIE, GPU memory service, DRA failover, checkpoints, Grove):
    # accepted so that real manifests validate, reported by `ignored_fields`.
    eppConfig: Union[dict[str, Any], None] = None
    frontendSidecar: Union[dict[str, Any], None] = None
    gpuMemoryService: Union[dict[str, Any], None] = None
    failover: Union[dict[str, Any], None] = None
    checkpoint: Union[dict[str, Any], None] = None
    topologyConstraint: Union[dict[str, Any], None] = None

    @property
    def container(self) -> Container:
        pod = self.extraPodSpec
        return (pod.mainContainer if pod else None) or Container()

    @property
    def replica_count(self) -> int:
        return 1 if self.replicas is None else self.replicas

    def gpus(self) -> int:
        """GPUs per pod: `resources.{limits,requests}.gpu`, else the container's `nvidia.com/gpu`."""
        res = self.resources
        for q in ((res.limits if res else None), (res.requests if res else None)):
            if q is not None and q.gpu not in (None, ""):
                return _gpu_count(q.gpu)
        native = self.container.resources or {}
        for key in ("limits", "requests"):
            value = (native.get(key) or {}).get(GPU_RESOURCE)
            if value not in (None, ""):
                return _gpu_count(value)
        return 0

    def annotation(self, key: str) -> str | None:
        """A component annotation (service `annotations` or pod metadata)."""
        meta = self.extraPodMetadata
        for source in ((meta.annotations if meta else None), self.annotations):
            if source and key in source:
                return source[key]
        return None


def _gpu_count(value: str | int) -> int:
    # An unfilled template (`gpu: REPLACE-COUNT`) passes the schema; `run` reports this, not int()'s text.
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"GPU count {value!r} is not a whole number") from None


class Pvc(Base):
    name: str
    create: Union[bool, None] = None
    storageClass: Union[str, None] = None
    size: Union[str, None] = None
    volumeAccessMode: Union[str, None] = None


class RestartStrategy(Base):
    type: Union[Literal["Sequential", "Parallel"], None] = None
    order: Union[list[str], None] = None


class Restart(Base):
    """`spec.restart`: changing `id` restarts the graph's pods (`render`: the operator's restart annotation)."""
    id: str
    strategy: Union[RestartStrategy, None] = None


class Spec(Base):
    services: dict[str, Service]
    envs: Union[list[EnvVar], None] = None
    pvcs: Union[list[Pvc], None] = None
    backendFramework: Union[Literal["sglang", "vllm", "trtllm"], None] = None
    restart: Union[Restart, None] = None
    topologyConstraint: Union[dict[str, Any], None] = None


class Metadata(Base):
    name: str
    namespace: Union[str, None] = None
    labels: Union[dict[str, str], None] = None
    annotations: Union[dict[str, str], None] = None


class Graph(Base):
    apiVersion: str
    kind: str
    metadata: Metadata
    spec: Spec
    status: Union[dict[str, Any], None] = None


# ----- checking ------------------------------------------------------------------------

def check(raw: Any) -> list[tuple[str, str]]:
    """Every schema problem of one parsed document as (path, message)."""
    errors: list[tuple[str, str]] = []
    check_struct(raw, Graph, "", errors)
    if not isinstance(raw, dict):
        return errors
    if raw.get("apiVersion") not in (None, API_VERSION) and isinstance(raw.get("apiVersion"), str):
        errors.append(("apiVersion", f"expected {API_VERSION!r} or {API_VERSION_V1BETA1!r}, "
                                     f"got {raw['apiVersion']!r}"))
    _check_kind(raw, errors)
    services = (raw.get("spec") or {}).get("services") if isinstance(raw.get("spec"), dict) else None
    if isinstance(services, dict):
        _check_count("spec.services", len(services), "service", errors)
        for name, svc in services.items():
            _check_replicas(f"spec.services.{name}", svc.get("replicas") if isinstance(svc, dict) else None, errors)
    return errors


IGNORED = "not supported by `run`/`render`; ignored"  # an operator-only field, as a warning says it
# Service fields of Dynamo's v1alpha1 CRD that only the operator can act on.
IGNORED_SERVICE_FIELDS = ("eppConfig", "frontendSidecar", "gpuMemoryService", "failover", "checkpoint",
                          "topologyConstraint")


def ignored_fields(raw: Any) -> list[str]:
    """Fields `run`/`render` accept but do not honour, as warnings (v1beta1.dropped_fields' twin)."""
    spec = raw.get("spec") if isinstance(raw, dict) else None
    services = spec.get("services") if isinstance(spec, dict) else None
    out = []
    for name, svc in (services.items() if isinstance(services, dict) else ()):
        out += [f"spec.services.{name}.{key}: {IGNORED}"
                for key in IGNORED_SERVICE_FIELDS if isinstance(svc, dict) and svc.get(key) is not None]
    if isinstance(spec, dict) and spec.get("topologyConstraint") is not None:
        out.append(f"spec.topologyConstraint: {IGNORED}")
    return out


# Checks both served versions make (v1beta1.check too), beyond the schema walk.

def _check_kind(raw: dict[str, Any], errors: list[tuple[str, str]]) -> None:
    if raw.get("kind") not in (None, KIND) and isinstance(raw.get("kind"), str):
        errors.append(("kind", f"expected {KIND!r}, got {raw['kind']!r}"))


def _check_count(path: str, count: int, noun: str, errors: list[tuple[str, str]]) -> None:
    """Between one and MAX_SERVICES services/components."""
    if not count:
        errors.append((path, f"at least one {noun} is required"))
    if count > MAX_SERVICES:
        errors.append((path, f"at most {MAX_SERVICES} {noun}s, got {count}"))


def _check_replicas(where: str, replicas: Any, errors: list[tuple[str, str]]) -> None:
    if type(replicas) is int and replicas < 0:
        errors.append((f"{where}.replicas", f"must be >= 0, got {replicas}"))


def load(raw: Any) -> Graph:
    """Convert a document that `check` found clean."""
    return msgspec.convert(raw, Graph)
