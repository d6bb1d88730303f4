"""DistributedRuntime: one per process. It owns the discovery store (and so the
process's lease, whose id is the instance id), the request-plane server and client,
the component metrics and the optional system server.

Workers call `serve_endpoint()`; callers use `watch_instances()` + `open_stream()`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import AsyncIterator, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

from dynamo.runtime import records
from dynamo.runtime.discovery.base import KeyValueStore, WatchEvent
from dynamo.runtime.discovery.base import start_store, store_from_env
from dynamo.runtime.records import EndpointId, InstanceRecord
from dynamo.runtime.rp_client import RequestPlaneClient, ResponseStream
from dynamo.runtime.rp_server import Handler, RequestPlaneServer
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.system_server import HealthState, SystemServer
from dynamo.runtime.tls import ClientTls, ServerTls

log = logging.getLogger(__name__)
# After the unregister, this long with no new request ends the grace period early (above a file store's 0.25 s
# poll and an etcd watch's delay: the callers have seen the worker leave).
GRACE_QUIET_SECS = 1.0


def advertise_host(backend: str | None, settings: RuntimeSettings | None = None) -> tuple[str, str]:
    """(bind host, advertised host) for the request plane (`backend`: a component's --discovery-backend)."""
    settings = settings or RuntimeSettings.from_env()
    backend = settings.backend(backend)
    if settings.tcp_rpc_host:
        return settings.tcp_rpc_host, settings.tcp_rpc_host
    if backend in ("file", "mem"):
        return "127.0.0.1", "127.0.0.1"
    if settings.pod_ip:
        return "0.0.0.0", settings.pod_ip
    try:
        return "0.0.0.0", socket.gethostbyname(socket.gethostname())
    except OSError:
        return "0.0.0.0", "127.0.0.1"


class ComponentMetrics:
    """`dynamo_component_*` metrics of the endpoints this process serves, with Dynamo 1.6.1's names, labels
    (`worker_id`: the instance id in hex, on every series) and buckets; each endpoint's series exist at 0 from
    the moment it serves. `requests_total` counts every request, `cancellation_total` those the caller
    cancelled (not one it stopped because it had what it needed: a stop string matched), `errors_total{error_type}`
    those that failed, by the error code they were answered with."""

    LABELS = ("dynamo_namespace", "dynamo_component", "dynamo_endpoint", "worker_id")
    DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

    def __init__(self, registry: CollectorRegistry, worker_id: Callable[[], int] | None = None) -> None:
        self.worker_id = worker_id or (lambda: 0)
        self.requests = Counter("dynamo_component_requests", "Total number of requests processed by work handler",
                                self.LABELS, registry=registry)
        self.cancellations = Counter("dynamo_component_cancellation", "Total number of requests cancelled by work "
                                     "handler", self.LABELS, registry=registry)
        self.inflight = Gauge("dynamo_component_inflight_requests", "Number of requests currently being processed "
                              "by work handler", self.LABELS, registry=registry)
        self.duration = Histogram("dynamo_component_request_duration_seconds", "Time spent processing requests by "
                                  "work handler", self.LABELS, registry=registry, buckets=self.DURATION_BUCKETS)
        self.request_bytes = Counter("dynamo_component_request_bytes", "Total number of bytes received in requests "
                                     "by work handler", self.LABELS, registry=registry)
        self.response_bytes = Counter("dynamo_component_response_bytes", "Total number of bytes sent in responses "
                                      "by work handler", self.LABELS, registry=registry)
        self.errors = Counter("dynamo_component_errors", "Total number of errors in work handler processing, by "
                              "its error code", self.LABELS + ("error_type",), registry=registry)
        registry.register(_Uptime(self.worker_label))
        self._labels: dict[str, tuple[str, str, str, str]] = {}

    def worker_label(self) -> str:
        return format(self.worker_id(), "x")

    def bind(self, eid: EndpointId) -> None:
        labels = self._labels[eid.endpoint] = (eid.namespace, eid.component, eid.endpoint, self.worker_label())
        for series in (self.requests, self.cancellations, self.inflight, self.duration, self.request_bytes,
                       self.response_bytes):
            series.labels(*labels)

    def start(self, endpoint: str) -> None:
        labels = self._labels.get(endpoint)
        if labels:
            self.inflight.labels(*labels).inc()

    def end(self, endpoint: str, status: str, seconds: float, received: int = 0, sent: int = 0,
            error: str | None = None) -> None:
        """One request done; `status`: "success", "error", "cancelled" (the caller no longer wanted it) or
        "stopped" (the caller had what it needed: not a cancellation)."""
        labels = self._labels.get(endpoint)
        if labels:
            self.inflight.labels(*labels).dec()
            self.requests.labels(*labels).inc()
            self.duration.labels(*labels).observe(seconds)
            self.request_bytes.labels(*labels).inc(received)
            self.response_bytes.labels(*labels).inc(sent)
            if status == "cancelled":
                self.cancellations.labels(*labels).inc()
            if error is not None:
                self.errors.labels(*labels, error).inc()


class _Uptime:
    """`dynamo_component_uptime_seconds{worker_id}`, read at scrape time (the id is the lease's, known once
    the discovery store has started)."""

    def __init__(self, worker_label: Callable[[], str]) -> None:
        self.worker_label, self.started = worker_label, time.monotonic()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("dynamo_component_uptime_seconds", "Total uptime of the DistributedRuntime in "
                                   "seconds", labels=("worker_id",))
        try:
            family.add_metric((self.worker_label(),), time.monotonic() - self.started)
        except RuntimeError:  # the store has not started: no id yet
            pass
        yield family


class DistributedRuntime:
    def __init__(self, store: KeyValueStore, namespace: str = records.DEFAULT_NAMESPACE,
                 settings: RuntimeSettings | None = None) -> None:
        self.store = store
        self.namespace = namespace
        self.settings = settings or RuntimeSettings.from_env()
        self.registry = CollectorRegistry()
        self.metrics = ComponentMetrics(self.registry, lambda: self.store.lease_id)
        self.health = HealthState(self.settings.required_endpoints(),
                                  self.settings.system_starting_health_status == "ready")
        self.server: RequestPlaneServer | None = None
        self.client = RequestPlaneClient(self.settings.tcp_connect_timeout, ClientTls.of(self.settings))
        self.system: SystemServer | None = None
        self._registered: list[str] = []

    @classmethod
    async def create(cls, discovery_backend: str | None = None, namespace: str = records.DEFAULT_NAMESPACE,
                     ttl: float | None = None) -> "DistributedRuntime":
        settings = RuntimeSettings.from_env()
        # ETCD_LEASE_TTL, as Dynamo names it; it bounds how long a dead process stays registered on every backend
        store = store_from_env(discovery_backend, ttl=ttl or max(1.0, settings.etcd_lease_ttl), settings=settings)
        await start_store(store)  # bounded: DiscoveryUnavailable instead of a silent hang
        return cls(store, namespace, settings)

    @property
    def instance_id(self) -> int:
        return self.store.lease_id

    def endpoint_id(self, text: str) -> EndpointId:
        return records.parse_endpoint(text, self.namespace)

    async def start_system_server(self, extra_metrics: Callable[[], bytes] | None = None) -> int | None:
        if self.settings.system_enabled is not None:  # Dynamo's words: manifests that set it keep working
            log.warning("DYN_SYSTEM_ENABLED is deprecated. System metrics server is now controlled solely by "
                        "DYN_SYSTEM_PORT. Set DYN_SYSTEM_PORT to a positive value to enable the server, or set to "
                        "-1 to disable (default).")
        port = self.settings.system_server_port()
        if port is None:
            return None
        host = self.settings.system_host
        self.system = SystemServer(self.registry, self.health, host, port, extra_metrics,
                                   self.settings.system_health_path, self.settings.system_live_path)
        await self.system.start()
        log.info("system server on %s:%d (/live /health /metrics)", host, self.system.port)
        return self.system.port

    async def _ensure_server(self) -> RequestPlaneServer:
        if self.server is None:
            bind, advertised = advertise_host(self.store.backend, self.settings)
            port = self.settings.tcp_rpc_port
            server = RequestPlaneServer(bind, port, ServerTls.of(self.settings))
            server.on_request_start = self.metrics.start
            server.on_request_end = self.metrics.end
            await server.start()
            server.advertised = f"{advertised}:{server.port}"  # type: ignore[attr-defined]
            self.server = server
        return self.server

    async def serve_endpoint(self, eid: EndpointId, handler: Handler, *, card_json: bytes | None = None,
                             request_type: type | None = None) -> None:
        """Start serving `eid` and register it (then its model card) under the lease.
        With `request_type` the handler gets decoded requests (see `RequestPlaneServer.add_handler`)."""
        server = await self._ensure_server()
        server.add_handler(eid.endpoint, handler, request_type)
        self.metrics.bind(eid)
        record = InstanceRecord(namespace=eid.namespace, component=eid.component, endpoint=eid.endpoint,
                                instance_id=self.instance_id, transport={"tcp": server.advertised})  # type: ignore
        key = records.instance_key(eid, self.instance_id)
        await self.store.put(key, records.instance_encoder.encode(record))
        self._registered.append(key)
        if card_json is not None:
            mdc = records.mdc_key(eid, self.instance_id)
            await self.store.put(mdc, card_json)
            self._registered.append(mdc)
        self.health.endpoints[str(eid)] = "ready"
        log.info("serving %s as instance %x at %s", eid, self.instance_id, server.advertised)  # type: ignore

    async def register_key(self, key: str, value: bytes) -> None:
        """Put an extra record under the lease; it leaves discovery with the others on unregister."""
        await self.store.put(key, value)
        if key not in self._registered:
            self._registered.append(key)

    async def unregister_key(self, key: str) -> None:
        if key in self._registered:
            self._registered.remove(key)
        await self.store.delete(key)

    async def unregister(self) -> None:
        """Leave discovery (callers stop sending new requests) without closing connections."""
        for key in self._registered:
            try:
                await self.store.delete(key)
            except Exception as exc:  # best effort: the lease expiry removes them anyway
                log.debug("unregister %s: %s", key, exc)
        self._registered.clear()
        for name in self.health.endpoints:
            self.health.endpoints[name] = "notready"

    async def open_stream(self, address: str, endpoint: str, payload: bytes,
                          headers: dict[str, str] | None = None) -> ResponseStream:
        return await self.client.open_stream(address, endpoint, payload, headers)

    def watch(self, prefix: str) -> AsyncIterator[WatchEvent]:
        return self.store.watch_prefix(prefix)

    async def drain(self, limit: float) -> bool:
        """Leave discovery, keep serving through the grace period (`serve_through_grace`), then refuse new
        requests (`draining`: the caller goes elsewhere) and wait for the ones in flight, `limit` in all;
        True when none is left."""
        await self.unregister()
        if self.server is None:
            return True
        began = time.monotonic()
        await self.serve_through_grace(min(self.settings.graceful_shutdown_grace_period_secs, limit))
        await self.server.stop_accepting()
        return await self.server.drain(max(0.0, limit - (time.monotonic() - began)))

    async def serve_through_grace(self, grace: float) -> None:
        """Dynamo's grace period (DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS): out of discovery, still taking
        requests, so those that callers route before they see it leave are served, not refused (a frontend
        whose model's last worker of a card leaves moves to another card only once it sees it go). It ends
        early once no request has come for GRACE_QUIET_SECS after the unregister (callers have seen it leave:
        a deliberate difference, an idle worker need not wait the whole period)."""
        began = time.monotonic()
        while self.server is not None and (now := time.monotonic()) - began < grace:
            if now - max(began, self.server.last_request) >= GRACE_QUIET_SECS:
                return
            await asyncio.sleep(0.05)

    async def shutdown(self, grace: float = 0.0) -> None:
        """Unregister, let in-flight requests finish within `grace`, then close everything."""
        await self.drain(grace)
        if self.server is not None:
            await self.server.close()
        await self.client.close()
        if self.system is not None:
            await self.system.stop()
        await self.store.close()
