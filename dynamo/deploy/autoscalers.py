"""The autoscalers a manifest file carries beside its graphs (Dynamo's autoscaling guide): Kubernetes
HorizontalPodAutoscalers (`autoscaling/*`) and KEDA ScaledObjects (`keda.sh/*`) whose `spec.scaleTargetRef`
names a DynamoGraphDeploymentScalingAdapter (DGDSA). This module owns the boundary between such an
autoscaler and the graph service it scales:

- which service a target is: the Dynamo operator gives every DGD service an adapter named
  `{dgd}-{service lowercased}` (`names.k8s_name`), unless `scalingAdapter.disable: true`;
- `validate`: a target no graph of the file has (an error naming the adapters there are), an autoscaler of a
  graph's service that cannot be read (a required field missing, a value of the wrong kind: an error, as the
  API server refuses it; `run` then meets none, at startup or in an apply), two autoscalers
  on one service, an autoscaler on a service the graph's planner scales (warnings: they would fight), and
  the deprecated v1alpha1 `autoscaling` field (ignored, as by the operator);
- `render`: no operator, so no adapters: a DGDSA target is pointed at the service's rendered Deployment
  (or LeaderWorkerSet, which has a scale subresource too), same name; the rendered object of a service an
  autoscaler manages carries no `spec.replicas` (set, every `kubectl apply` would reset the autoscaler's count);
- `run`: evaluated there by `local_autoscalers.py` on the service this module finds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamo.deploy import local_autoscalers, model, multinode, names, planner_scaling

HPA_KIND = "HorizontalPodAutoscaler"
KEDA_KIND = "ScaledObject"
ADAPTER_KIND = "DynamoGraphDeploymentScalingAdapter"
ADAPTER_API = "nvidia.com/v1alpha1"
_API_GROUPS = {HPA_KIND: "autoscaling/", KEDA_KIND: "keda.sh/"}
DEPLOYMENT = ("apps/v1", "Deployment")
LEADER_WORKER_SET = (multinode.LWS_API, "LeaderWorkerSet")
TARGET_PATH = "spec.scaleTargetRef"

ServiceKey = tuple[str, str]  # (graph name, service name)


@dataclass
class Autoscaler:
    """One HPA or ScaledObject of the file: where it is and what it targets."""

    document: int
    kind: str
    name: str
    target: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def target_kind(self) -> str:
        return str(self.target.get("kind") or "")

    @property
    def target_name(self) -> str:
        return str(self.target.get("name") or "")


def is_autoscaler(doc: Any) -> bool:
    if not isinstance(doc, dict) or doc.get("kind") not in _API_GROUPS:
        return False
    return str(doc.get("apiVersion", "")).startswith(_API_GROUPS[doc["kind"]])


def find(docs: list[Any]) -> list[Autoscaler]:
    """The file's autoscalers, in document order."""
    out = []
    for index, doc in enumerate(docs):
        if is_autoscaler(doc):
            spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
            target = spec.get("scaleTargetRef")
            name = (doc.get("metadata") or {}).get("name") or "(unnamed)"
            out.append(Autoscaler(index, doc["kind"], str(name), target if isinstance(target, dict) else {}))
    return out


def rendered_ref(svc: model.Service) -> tuple[str, str]:
    """(apiVersion, kind) of the object `render` makes of a service."""
    return LEADER_WORKER_SET if multinode.node_count(svc) > 1 else DEPLOYMENT


def _raw_services(docs: list[Any]) -> list[tuple[str, str, Any]]:
    """(graph, service, raw service) of every graph document, either served version; read from the documents
    so that a graph with schema errors still has its adapters (and no false 'no such adapter')."""
    out = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind", model.KIND) != model.KIND:
            continue
        graph = str((doc.get("metadata") or {}).get("name") or "")
        spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
        services, components = spec.get("services"), spec.get("components")
        if isinstance(services, dict):  # v1alpha1
            out += [(graph, str(name), svc) for name, svc in services.items()]
        if isinstance(components, list):  # v1beta1
            out += [(graph, str(c["name"]), c) for c in components if isinstance(c, dict) and c.get("name")]
    return out


def _adapter_disabled(raw: Any) -> bool:
    adapter = raw.get("scalingAdapter") if isinstance(raw, dict) else None
    return isinstance(adapter, dict) and adapter.get("disable") is True


def _adapter_opted_in(raw: Any, beta: bool) -> bool:
    """Whether Dynamo's current operators (1.2 on) create the service's adapter: v1alpha1 `scalingAdapter:
    {enabled: true}`, v1beta1 `scalingAdapter` present (a marker)."""
    adapter = raw.get("scalingAdapter") if isinstance(raw, dict) else None
    return isinstance(adapter, dict) and (beta or adapter.get("enabled") is True)


def not_opted_in(docs: list[Any]) -> set[str]:
    """Adapter names of services that current operators give no adapter (they need the opt-in)."""
    out = set()
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind", model.KIND) == model.KIND:
            beta = isinstance((doc.get("spec") or {}).get("components"), list)
            out |= {names.k8s_name(graph, name) for graph, name, raw in _raw_services([doc])
                    if not _adapter_opted_in(raw, beta) and not _adapter_disabled(raw)}
    return out


def adapters(docs: list[Any]) -> tuple[dict[str, ServiceKey], dict[str, ServiceKey]]:
    """({adapter name: its service}, {adapter name: a service that disables its adapter}) of the file's graphs."""
    present: dict[str, ServiceKey] = {}
    disabled: dict[str, ServiceKey] = {}
    for graph, name, raw in _raw_services(docs):
        (disabled if _adapter_disabled(raw) else present)[names.k8s_name(graph, name)] = (graph, name)
    return present, disabled


def _targets(graphs: list[model.Graph]) -> dict[tuple[str, str], ServiceKey]:
    """(target kind, name) -> service: the service's adapter, and the object `render` makes of it (an
    autoscaler already pointed at the rendered Deployment manages the service just the same)."""
    out: dict[tuple[str, str], ServiceKey] = {}
    for graph in graphs:
        for name, svc in graph.spec.services.items():
            obj_name, key = names.k8s_name(graph.metadata.name, name), (graph.metadata.name, name)
            if not (svc.scalingAdapter and svc.scalingAdapter.disable):
                out[(ADAPTER_KIND, obj_name)] = key
            out[(rendered_ref(svc)[1], obj_name)] = key
    return out


def managed(docs: list[Any], graphs: list[model.Graph]) -> dict[ServiceKey, list[Autoscaler]]:
    """The services some autoscaler of the file scales, with those autoscalers."""
    known = _targets(graphs)
    out: dict[ServiceKey, list[Autoscaler]] = {}
    for scaler in find(docs):
        key = known.get((scaler.target_kind, scaler.target_name))
        if key is not None:
            out.setdefault(key, []).append(scaler)
    return out


# ----- validate --------------------------------------------------------------------------

def check(docs: list[Any], graphs: list[model.Graph], maps: dict[str, dict[str, bytes]]
          ) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the file's autoscalers; `graphs` are the file's clean graphs."""
    present, disabled = adapters(docs)
    errors = [e for s in find(docs) if (e := _unknown_adapter(s, present, disabled))] + unreadable(docs, graphs)
    unopted = not_opted_in(docs)
    warnings = [f"document {s.document}: {TARGET_PATH}.name: {s.label} targets {ADAPTER_KIND} {s.target_name}, "
                "which Dynamo's operator (1.2 on) creates only when the service opts in: scalingAdapter: {enabled: "
                "true} (v1beta1: scalingAdapter: {}); render and run need no adapter"
                for s in find(docs) if s.target_kind == ADAPTER_KIND and s.target_name in unopted]
    planners = {graph.metadata.name: planner_scaling.scaled_services(graph, maps) for graph in graphs}
    for (graph, service), scalers in managed(docs, graphs).items():
        where, names = f"graph {graph}, service {service}", _names(scalers)
        if len(scalers) > 1:
            warnings.append(f"{where}: scaled by {names}; they would fight over its replicas (Dynamo's autoscaling "
                            "guide: one autoscaler per service)")
        planner = planners.get(graph, {}).get(service)
        if planner:
            warnings.append(f"{where}: scaled by {names} and by the graph's planner (service {planner}); they would "
                            "fight over its replicas (one autoscaler per service: leave this one to the planner, "
                            "or take it out of the planner's pools)")
    return errors, warnings


def unreadable(docs: list[Any], graphs: list[model.Graph]) -> list[str]:
    """The autoscalers of the graphs' services that `run` could not read (`local_autoscalers.build`), as errors."""
    by_name = {graph.metadata.name: graph for graph in graphs}
    errors = []
    for (graph, service), scalers in managed(docs, graphs).items():
        requests = local_autoscalers.service_requests(by_name[graph].spec.services[service])
        for scaler in scalers:
            try:
                local_autoscalers.build(docs[scaler.document], service, list, requests, None,
                                        local_autoscalers.HPA_SYNC_PERIOD, [])
            except ValueError as exc:
                errors.append(f"document {scaler.document}: {exc}")
    return errors


def _names(scalers: list[Autoscaler]) -> str:
    labels = [s.label for s in scalers]
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"


def _unknown_adapter(scaler: Autoscaler, present: dict[str, ServiceKey],
                     disabled: dict[str, ServiceKey]) -> str | None:
    name = scaler.target_name
    if scaler.target_kind != ADAPTER_KIND or name in present:
        return None
    where = f"document {scaler.document}: {TARGET_PATH}.name: {scaler.label} targets {ADAPTER_KIND} {name!r}"
    if name in disabled:
        graph, service = disabled[name]
        return f"{where}, which graph {graph} does not create (service {service} has scalingAdapter.disable: true)"
    have = ", ".join(sorted(present)) or "none"
    return f"{where}, which no graph in this file has (its graphs' adapters: {have})"


def deprecated_fields(doc: Any) -> list[str]:
    """The v1alpha1 services' `autoscaling` field, as warnings: deprecated, and ignored as by the operator."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    services = spec.get("services") if isinstance(spec, dict) else None
    graph = str((doc.get("metadata") or {}).get("name") or "") if isinstance(doc, dict) else ""
    return [f"spec.services.{name}.autoscaling: deprecated and ignored (as by Dynamo's operator); autoscale the "
            f"service with a {HPA_KIND} or KEDA {KEDA_KIND} whose scaleTargetRef is {ADAPTER_KIND} "
            f"{names.k8s_name(graph, str(name))}"
            for name, svc in (services.items() if isinstance(services, dict) else ())
            if isinstance(svc, dict) and svc.get("autoscaling") is not None]


# ----- render ----------------------------------------------------------------------------

def _is_rendered_workload(obj: dict[str, Any]) -> bool:
    """A Deployment / LeaderWorkerSet `render` made of a DGD service (it names the service it renders)."""
    notes = obj.get("metadata", {}).get("annotations") or {}
    return obj.get("kind") in (DEPLOYMENT[1], LEADER_WORKER_SET[1]) and planner_scaling.NAME_ANNOTATION in notes


def retarget(objects: list[dict[str, Any]], warnings: list[str]) -> None:
    """Point the autoscalers among the rendered `objects` at the rendered services they scale (a DGDSA target
    becomes the service's Deployment / LeaderWorkerSet, same name; a target naming one already is kept), and
    leave those services' replicas to them. Other targets are left alone."""
    workloads = {o["metadata"]["name"]: o for o in objects if _is_rendered_workload(o)}
    for obj in objects:
        ref = (obj.get("spec") or {}).get("scaleTargetRef") if is_autoscaler(obj) else None
        workload = workloads.get(ref.get("name")) if isinstance(ref, dict) else None
        if workload is None:
            continue
        if ref.get("kind") == ADAPTER_KIND:
            ref.update(apiVersion=workload["apiVersion"], kind=workload["kind"])
        if ref.get("kind") != workload["kind"]:
            continue
        workload["spec"].pop("replicas", None)  # the autoscaler's to set; apply would reset it otherwise
        _beside_target(obj, workload, warnings)


def _beside_target(scaler: dict[str, Any], workload: dict[str, Any], warnings: list[str]) -> None:
    """A scaleTargetRef is namespace-local: the autoscaler goes where its target is rendered."""
    meta, want = scaler.setdefault("metadata", {}), workload["metadata"].get("namespace")
    have = meta.get("namespace")
    if have == want:
        return
    if have is not None:
        warnings.append(f"{scaler['kind']} {meta.get('name')}: namespace {have} replaced by "
                        f"{want or 'none (kubectl current)'}, where its target {workload['kind']} "
                        f"{workload['metadata']['name']} is rendered")
    if want is None:
        meta.pop("namespace", None)
    else:
        meta["namespace"] = want
