"""Worker system server on `DYN_SYSTEM_PORT` (see `RuntimeSettings.system_server_port`):
`/live`, `/health` (503 until the
worker's endpoints serve, and again once its engine dies) and `/metrics`
(Prometheus text, including `dynamo_component_*`, and an engine's own series re-served through
`RelabeledFamilies`). Components mount more routes with `add_routes` (the worker's `/v1/loras`)."""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from dynamo.runtime.asgi import JSON_HEADERS, TEXT_HEADERS, EmbeddedHttpServer, json_encode, send_bytes, send_json

log = logging.getLogger(__name__)
READS = ("GET", "HEAD")  # what the probe and metrics routes answer (a scraper or a probe only reads)


class RelabeledFamilies:
    """A collector for the system server's registry: the families of another registry whose names
    start with one of `prefixes`, each sample with `labels` added. A label the sample already has
    wins, as in NVIDIA Dynamo's `LabelInjectingCollector` (vLLM's own `model_name` stays vLLM's).

    `source` is called at each scrape: an engine may swap its registry (vLLM's multiprocess one
    is built per scrape). No `describe`: the families are not known before the engine runs."""

    def __init__(self, source: Callable[[], Any], prefixes: tuple[str, ...], labels: dict[str, str]) -> None:
        self.source, self.prefixes, self.labels = source, prefixes, labels

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(self.source().collect())
        except Exception as exc:  # the engine's registry is not ours: a broken one must not fail /metrics
            log.warning("engine metrics unavailable: %s", exc)
            return
        for family in families:
            if not family.name.startswith(self.prefixes):
                continue
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [s._replace(labels={**self.labels, **s.labels}) for s in family.samples]
            yield out


class HealthState:
    """What `/health` says. `required` (DYN_SYSTEM_USE_ENDPOINT_HEALTH_STATUS): the endpoint names that must
    serve, others left out (None: every endpoint); `starting_ready` (DYN_SYSTEM_STARTING_HEALTH_STATUS=ready):
    healthy before any endpoint serves, as Dynamo's components can start."""

    def __init__(self, required: set[str] | None = None, starting_ready: bool = False) -> None:
        self.endpoints: dict[str, str] = {}  # "dyn://ns.comp.ep" -> "ready" | "notready"
        self.engine_ok = True
        self.started = time.monotonic()
        self.required, self.starting_ready = required, starting_ready

    def ready(self) -> bool:
        if not self.engine_ok:
            return False
        counted = {k: v for k, v in self.endpoints.items()
                   if self.required is None or k.rsplit(".", 1)[-1] in self.required}
        if not counted:
            return self.starting_ready and (self.required is None or not self.endpoints)
        named = {k.rsplit(".", 1)[-1] for k in counted}
        return all(v == "ready" for v in counted.values()) and (self.required is None or self.required <= named)

    def body(self) -> dict:
        return {
            "status": "ready" if self.ready() else "notready",
            "endpoints": dict(self.endpoints),
            "uptime": round(time.monotonic() - self.started, 3),
        }


class SystemServer:
    def __init__(self, registry: CollectorRegistry, health: HealthState, host: str, port: int,
                 extra_metrics: Callable[[], bytes] | None = None, health_path: str = "/health",
                 live_path: str = "/live") -> None:
        self.registry = registry
        self.health = health
        self.health_path, self.live_path = health_path, live_path  # DYN_SYSTEM_HEALTH_PATH / _LIVE_PATH
        self.extra_metrics = extra_metrics
        self.http = EmbeddedHttpServer(self.app, host, port)
        # (path prefix, ASGI app): checked before the 404, in the order added.
        self.mounts: list[tuple[str, Callable[..., Awaitable[None]]]] = []

    def add_routes(self, prefix: str, app: Callable[..., Awaitable[None]]) -> None:
        self.mounts.append((prefix, app))

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in (self.live_path, self.health_path, "/metrics") and scope.get("method", "GET") not in READS:
            await send_bytes(send, 405, json_encode({"error": {
                "message": f"{scope['method']} is not allowed on {path}: use GET or HEAD", "type": "invalid_request_error",
                "param": None, "code": "method_not_allowed"}}), [*JSON_HEADERS, (b"allow", b"GET, HEAD")])
        elif path == self.live_path:
            await send_json(send, 200, {"status": "live", "message": "Service is live"})
        elif path == self.health_path:
            body = self.health.body()
            await send_json(send, 200 if self.health.ready() else 503, body)
        elif path == "/metrics":
            data = generate_latest(self.registry)
            if self.extra_metrics is not None:
                data += self.extra_metrics()
            await send_bytes(send, 200, data, TEXT_HEADERS)
        else:
            for prefix, app in self.mounts:
                if path == prefix or path.startswith(prefix + "/"):
                    await app(scope, receive, send)
                    return
            await send_json(send, 404, {"error": {"message": f"no route {path}", "type": "not_found_error",
                                                  "param": None, "code": "not_found"}})

    async def start(self) -> None:
        await self.http.start()

    @property
    def port(self) -> int:
        return self.http.port

    async def stop(self) -> None:
        await self.http.stop()
