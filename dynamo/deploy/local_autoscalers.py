"""The autoscalers of a manifest file (Dynamo's autoscaling guide: HPAs and KEDA ScaledObjects on a
service's DynamoGraphDeploymentScalingAdapter) evaluated by `dynamo.deploy run` itself, scaling the
service through its supervisor as the HPA controller and KEDA scale the adapter on a cluster: an
autoscaling policy can be tried on one machine, on the mocker, before it meets a cluster.

Evaluated:
- KEDA `prometheus` triggers: the query at `--prometheus-endpoint` when given (a trigger's
  `serverAddress` names a cluster service), else at its `serverAddress`; `threshold`,
  `activationThreshold`, `metricType` (AverageValue, Value), `ignoreNullValues`; `cpu` / `memory`
  triggers; KEDA's activation (from zero to `max(minReplicaCount, 1)` as soon as a trigger is active),
  `cooldownPeriod` (and `initialCooldownPeriod`) back to zero or `idleReplicaCount`, `pollingInterval`,
  `advanced.horizontalPodAutoscalerConfig.behavior`;
- HPA `Resource` / `ContainerResource` metrics (cpu, memory: `Utilization` of the container's requests,
  or `AverageValue`), read from the replicas' processes every `--hpa-sync-period` s, with `behavior`.
Anything else (HPA External, Pods and Object metrics need a metrics adapter's rules, which the file does
not carry; KEDA's other scalers) is not evaluated: `notes` says so, at start and in an apply's response
(`graph_autoscalers.py` holds a graph's set and what an apply changes of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from dynamo.deploy.render import container_resources
from dynamo.deploy.scaler_metrics import ProcessUsage, PromTrigger, quantity
from dynamo.deploy.scaling_rules import Governor, parse_behavior, proposal
from dynamo.planner.prometheus import PrometheusClient

log = logging.getLogger("dynamo.deploy")

HPA_SYNC_PERIOD = 15.0  # the controller's --horizontal-pod-autoscaler-sync-period
KEDA_MAX_REPLICAS = 100


@dataclass
class Trigger:
    """One metric an autoscaler reads, against its target."""

    describe: str
    read: Callable[[], Awaitable[float | None]]
    target: float
    kind: str = "Value"  # AverageValue: the value is the service's total, the target per replica
    activation: float = 0.0

    def ratio(self, value: float, current: int) -> float:
        per = self.target * (current if self.kind == "AverageValue" else 1)
        return value / per if per > 0 else float("inf")


@dataclass
class Keda:
    """A ScaledObject's own rules around its HPA."""

    min_count: int = 0
    cooldown: float = 300.0
    initial_cooldown: float = 0.0
    idle_count: int | None = None
    last_active: float | None = None


@dataclass
class LocalAutoscaler:
    """One HPA or ScaledObject of the file, on one service."""

    label: str
    service: str
    triggers: list[Trigger]
    governor: Governor
    interval: float
    keda: Keda | None = None
    started: float = 0.0
    clients: list[PrometheusClient] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)  # the last evaluation, for the control endpoint

    def status(self) -> dict[str, Any]:
        return {"autoscaler": self.label, "service": self.service, "every_s": self.interval, **self.last}

    async def step(self, now: float, current: int) -> tuple[int | None, str]:
        """(replicas to set, or None to leave them; why)."""
        readings = [(t, await t.read()) for t in self.triggers]
        known = [(t, v) for t, v in readings if v is not None]
        if not known:
            return None, "no metric value yet"
        why = ", ".join(f"{t.describe}={v:g}" for t, v in known)
        if self.keda is not None:
            decided = self._keda(now, current, known)
            if decided is not None:
                return decided, why
        if current == 0:
            return None, why  # an HPA does not scale a target at zero
        wanted = max(proposal(current, t.ratio(v, current)) for t, v in known)
        return self.governor.decide(now, current, wanted), why

    def _keda(self, now: float, current: int, known: list[tuple[Trigger, float]]) -> int | None:
        """KEDA's activation and cooldown; None where its HPA decides."""
        keda = self.keda
        assert keda is not None
        idle = keda.idle_count if keda.idle_count is not None else 0
        if any(v > t.activation for t, v in known):
            keda.last_active = now
            return max(keda.min_count, 1) if current <= idle else None
        may_idle = keda.idle_count is not None or keda.min_count == 0
        since = keda.last_active if keda.last_active is not None else self.started + keda.initial_cooldown - keda.cooldown
        if may_idle and current > idle and now - since >= keda.cooldown:
            return idle
        return current if current <= idle else None

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def hpa(doc: dict[str, Any], service: str, sessions: Callable[[], list[int]], requests: dict[str, float],
        sync_period: float, notes: list[str]) -> LocalAutoscaler | None:
    spec, label = doc.get("spec") or {}, f"HorizontalPodAutoscaler {doc['metadata']['name']}"
    triggers = []
    for metric in spec.get("metrics") or [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]:
        kind = metric.get("type")
        body = metric.get("resource") or metric.get("containerResource") if kind in ("Resource", "ContainerResource") \
            else None
        trigger = _resource_trigger(body, sessions, requests) if body else None
        if trigger is None:
            notes.append(f"{label}: its {kind} metric is not evaluated under run (it needs a metrics adapter's "
                         "rules, which the file does not carry)" if body is None else
                         f"{label}: its {body.get('name')} metric is not evaluated under run (no request for it)")
            continue
        triggers.append(trigger)
    if not triggers:
        return None
    up, down = parse_behavior(spec.get("behavior"))
    return LocalAutoscaler(label, service, triggers,
                           Governor(up, down, int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])), sync_period)


def _resource_trigger(body: dict[str, Any], sessions, requests: dict[str, float]) -> Trigger | None:
    name, target = body.get("name"), body.get("target") or {}
    if name not in ("cpu", "memory"):
        return None
    if target.get("type") == "Utilization":
        request = requests.get(name)
        if not request:
            return None  # the HPA cannot compute a utilisation without a request either
        return Trigger(f"{name} %", ProcessUsage(sessions, name, request).read, float(target["averageUtilization"]))
    return Trigger(name, ProcessUsage(sessions, name).read, quantity(target.get("averageValue", target.get("value"))))


def scaled_object(doc: dict[str, Any], service: str, sessions: Callable[[], list[int]], requests: dict[str, float],
                  prometheus_url: str | None, notes: list[str]) -> LocalAutoscaler | None:
    spec, label = doc.get("spec") or {}, f"ScaledObject {doc['metadata']['name']}"
    scaler = LocalAutoscaler(label, service, [], Governor(), float(spec.get("pollingInterval", 30)), _keda(spec))
    for trig in spec.get("triggers") or []:
        trigger = _keda_trigger(trig, scaler, sessions, requests, prometheus_url)
        if trigger is None:
            notes.append(f"{label}: its {trig.get('type')} trigger is not evaluated under run")
            continue
        scaler.triggers.append(trigger)
    if not scaler.triggers:
        return None
    behavior = ((spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}).get("behavior")
    up, down = parse_behavior(behavior)
    scaler.governor = Governor(up, down, max(scaler.keda.min_count, 1),  # type: ignore[union-attr]
                               int(spec.get("maxReplicaCount", KEDA_MAX_REPLICAS)))
    return scaler


def _keda(spec: dict[str, Any]) -> Keda:
    idle = spec.get("idleReplicaCount")
    return Keda(int(spec.get("minReplicaCount", 0)), float(spec.get("cooldownPeriod", 300)),
                float(spec.get("initialCooldownPeriod", 0)), None if idle is None else int(idle))


def _keda_trigger(trig: dict[str, Any], scaler: LocalAutoscaler, sessions, requests: dict[str, float],
                  prometheus_url: str | None) -> Trigger | None:
    meta, kind = trig.get("metadata") or {}, str(trig.get("metricType") or "AverageValue")
    if trig.get("type") == "prometheus":
        client = PrometheusClient(prometheus_url or str(meta["serverAddress"]))
        scaler.clients.append(client)
        ignore = str(meta.get("ignoreNullValues", "true")).lower() != "false"
        return Trigger(f"prometheus {meta.get('metricName') or 'query'}",
                       PromTrigger(client, str(meta["query"]), ignore).read, float(meta["threshold"]), kind,
                       float(meta.get("activationThreshold", 0)))
    if trig.get("type") in ("cpu", "memory"):
        body = {"name": trig["type"], "target": {"type": kind, "averageUtilization": meta.get("value"),
                                                 "averageValue": meta.get("value")}}
        return _resource_trigger(body, sessions, requests)
    return None


# ----- under run ---------------------------------------------------------------------------

def service_requests(svc: Any) -> dict[str, float]:
    """The main container's cpu (cores) and memory (bytes) requests, which an HPA's utilisation divides
    by; limits where no request is set (the API server defaults a container's requests to its limits).
    Read as `render` writes them into the pod (typed `resources` over the container's own)."""
    resources = container_resources(svc)
    out: dict[str, float] = {}
    for source in ("limits", "requests"):  # requests win
        for name in ("cpu", "memory"):
            value = (resources.get(source) or {}).get(name)
            if value not in (None, ""):
                out[name] = quantity(value)
    return out


def build(doc: dict[str, Any], service: str, sessions: Callable[[], list[int]], requests: dict[str, float],
          prometheus_url: str | None, sync_period: float, notes: list[str]) -> LocalAutoscaler | None:
    """The evaluable autoscaler of an HPA or ScaledObject document (None, with `notes`, when nothing of it is).
    ValueError, naming the document, for one that cannot be read (a field missing, a value of the wrong kind):
    `validate` refuses such a file (`autoscalers.check`), so `run` meets none, at startup or in an apply."""
    try:
        return _build(doc, service, sessions, requests, prometheus_url, sync_period, notes)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        name = f"{doc.get('kind')} {(doc.get('metadata') or {}).get('name')}"
        raise ValueError(f"{name}: cannot read {_what(exc)}") from None


def _what(exc: Exception) -> str:
    """What a document's read failed on, for its error."""
    if isinstance(exc, KeyError):
        return f"{exc} (a required field is missing)"
    if isinstance(exc, (AttributeError, TypeError, IndexError)):
        return f"a field of the wrong kind ({exc})"
    return str(exc)


def _build(doc: dict[str, Any], service: str, sessions: Callable[[], list[int]], requests: dict[str, float],
           prometheus_url: str | None, sync_period: float, notes: list[str]) -> LocalAutoscaler | None:
    _check_shape(doc)
    if doc.get("kind") == "ScaledObject":
        scaler = scaled_object(doc, service, sessions, requests, prometheus_url, notes)
        for client in scaler.clients if scaler else []:
            host = client.url.split("//", 1)[-1].split(":", 1)[0].split("/", 1)[0]
            if host.endswith((".svc", ".svc.cluster.local")) or ".svc." in host:
                notes.append(f"{scaler.label}: its Prometheus {client.url} is a cluster address; pass "  # type: ignore
                             "--prometheus-endpoint URL (a Prometheus scraping this run: GET /prometheus/targets "
                             "of the control endpoint is its http_sd_configs URL)")
        return scaler
    return hpa(doc, service, sessions, requests, sync_period, notes)


def _check_shape(doc: dict[str, Any]) -> None:
    """The lists and mappings the evaluators walk, as the API server's schema types them (TypeError names the
    field): a wrong kind there would otherwise surface as an obscure attribute error."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise TypeError("spec: not a mapping")
    field_ = "triggers" if doc.get("kind") == "ScaledObject" else "metrics"
    items = spec.get(field_)
    if items is not None and (not isinstance(items, list) or not all(isinstance(i, dict) for i in items)):
        raise TypeError(f"spec.{field_}: not a list of mappings")
    for index, item in enumerate(items or []):
        for key, value in item.items():
            if key in ("metadata", "resource", "containerResource") and not isinstance(value, dict):
                raise TypeError(f"spec.{field_}[{index}].{key}: not a mapping")


async def drive(scaler: LocalAutoscaler, replicas: Callable[[], int], scale: Callable[[int], None],
                stop: asyncio.Event, clock: Callable[[], float] = time.monotonic) -> None:
    """Evaluate `scaler` every interval until `stop`, scaling its service when it says so."""
    scaler.started = scaler.started or clock()  # an edited autoscaler keeps its predecessor's (graph_autoscalers)
    said: set[str] = set()
    try:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), scaler.interval)
            if stop.is_set():
                return
            current = replicas()
            try:
                target, why = await scaler.step(clock(), current)
            except Exception as exc:  # a metric that cannot be read leaves the replicas as they are
                scaler.last = {"replicas": current, "error": str(exc)}
                if str(exc) not in said:
                    said.add(str(exc))
                    log.warning("%s: %s; replicas left as they are", scaler.label, exc)
                continue
            scaler.last = {"replicas": current, "metrics": why, "decided": current if target is None else target}
            if target is not None and target != current:
                log.warning("%s: %s %d -> %d replica(s) (%s)", scaler.label, scaler.service, current, target, why)
                scale(target)
    finally:
        await scaler.close()
