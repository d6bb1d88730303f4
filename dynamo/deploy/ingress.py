"""What `render` writes for a service's `ingress` (DynamoComponentDeploymentSharedSpec.ingress), as Dynamo's
operator does: with `enabled`, a `networking.k8s.io/v1` Ingress named as the service's objects, one rule for
`{hostPrefix}{host}.{hostSuffix}` (suffix `local` unless given), path `/` (Prefix) to the service's Kubernetes
Service, the class `ingressControllerClassName`, TLS from `tls.secretName`; with `useVirtualService` and a
`virtualServiceGateway`, an Istio VirtualService on that gateway instead. `annotations` and `labels` go on
the object written. Without an operator nothing else would expose the frontend: before this, `render` dropped
the field and the rendered graph was unreachable from outside the cluster, silently.
"""

from __future__ import annotations

from typing import Any

from dynamo.deploy import contract
from dynamo.deploy.model import Graph, Ingress, Service

DEFAULT_HOST_SUFFIX = "local"  # the operator's default ingress suffix
ISTIO_API = "networking.istio.io/v1beta1"


def host(graph: Graph, svc: Service) -> str:
    spec = svc.ingress
    assert spec is not None
    base = (spec.hostPrefix or "") + (spec.host or graph.metadata.name)  # the operator's default host: the DGD
    return f"{base}.{spec.hostSuffix or DEFAULT_HOST_SUFFIX}"


def objects(graph: Graph, name: str, svc: Service, meta: dict[str, Any], port: int,
            warnings: list[str] | None) -> list[dict[str, Any]]:
    """The Ingress or VirtualService for the service (none unless `ingress.enabled`); `meta` is the metadata
    of its Kubernetes Service (name, namespace, labels), `port` that Service's port."""
    spec = svc.ingress
    if spec is None or not spec.enabled:
        return []
    if not contract.is_frontend(svc):
        _warn(warnings, f"service {name}: ingress on a {svc.componentType or 'worker'}, not a frontend: it routes to "
                        f"the service's port {port} (its system port: health and metrics, not the OpenAI API)")
    out_meta = {**meta, "labels": {**meta.get("labels", {}), **(spec.labels or {})}}
    if spec.annotations:
        out_meta["annotations"] = dict(spec.annotations)
    if spec.useVirtualService:
        if not spec.virtualServiceGateway:
            _warn(warnings, f"service {name}: ingress.useVirtualService without ingress.virtualServiceGateway: no "
                            "VirtualService is written (Dynamo's operator writes none either)")
            return []
        return [_virtual_service(out_meta, host(graph, svc), spec.virtualServiceGateway, port)]
    return [_ingress(out_meta, host(graph, svc), spec, port)]


def _ingress(meta: dict[str, Any], rule_host: str, spec: Ingress, port: int) -> dict[str, Any]:
    backend = {"service": {"name": meta["name"], "port": {"number": port}}}
    body: dict[str, Any] = {"rules": [{"host": rule_host, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": backend}]}}]}
    if spec.ingressControllerClassName:
        body["ingressClassName"] = spec.ingressControllerClassName
    if spec.tls is not None:
        tls: dict[str, Any] = {"hosts": [rule_host]}
        if spec.tls.secretName:
            tls["secretName"] = spec.tls.secretName
        body["tls"] = [tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta, "spec": body}


def _virtual_service(meta: dict[str, Any], rule_host: str, gateway: str, port: int) -> dict[str, Any]:
    route = {"match": [{"uri": {"prefix": "/"}}],
             "route": [{"destination": {"host": meta["name"], "port": {"number": port}}}]}
    return {"apiVersion": ISTIO_API, "kind": "VirtualService", "metadata": meta,
            "spec": {"hosts": [rule_host], "gateways": [gateway], "http": [route]}}


def _warn(warnings: list[str] | None, text: str) -> None:
    if warnings is not None:
        warnings.append(text)
