"""`dynamo_planner_*` Prometheus metrics (Dynamo 1.6.1 names) and the planner's own
`/metrics` + `/health` server on `metric_reporting_prometheus_port`, on every interface as Dynamo's (a
cluster's Prometheus and the kubelet's probes reach it at the pod's address)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from dynamo.runtime.asgi import TEXT_HEADERS, EmbeddedHttpServer, send_bytes, send_json

P = "dynamo_planner"


class PlannerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{P}_{name}", doc, labels, registry=r)

        self.replicas = {role: gauge(f"num_{role}_replicas", f"Desired {role} replicas") for role in ("prefill", "decode")}
        self.ready = {role: gauge(f"num_{role}_replicas_ready", f"Ready {role} replicas") for role in ("prefill", "decode")}
        self.predicted_replicas = {role: gauge(f"predicted_num_{role}_replicas", f"Throughput-loop {role} target")
                                   for role in ("prefill", "decode")}
        # keyed by TrafficObservation's field names; named as Dynamo names them
        self.observed = {k: gauge(f"observed_{name}", f"Observed {name} (Prometheus, last interval)")
                         for k, name in (("ttft_ms", "ttft_ms"), ("itl_ms", "itl_ms"),
                                         ("requests_per_second", "requests_per_second"),
                                         ("request_duration_s", "request_duration_seconds"),
                                         ("isl", "input_sequence_tokens"), ("osl", "output_sequence_tokens"),
                                         ("kv_hit_rate", "kv_hit_rate"))}
        self.predicted_rps = gauge("predicted_requests_per_second", "Predicted demand, next interval")
        self.predicted_isl = gauge("predicted_input_sequence_tokens", "Input length the next interval is sized for")
        self.predicted_osl = gauge("predicted_output_sequence_tokens", "Output length the next interval is sized for")
        self.tick_duration = Histogram(f"{P}_tick_duration_seconds", "Time one planner tick took",
                                       buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0), registry=r)
        self.estimated = {k: gauge(f"estimated_{k}", f"Perf-model estimate of {k}, worst engine")
                          for k in ("ttft_ms", "itl_ms")}
        self.sla_target = {k: gauge(f"sla_target_{k}", f"SLA target {k}") for k in ("ttft_ms", "itl_ms")}
        self.capacity = {role: gauge(f"engine_{role}_capacity_requests_per_second",
                                     f"Requests/s one {role} engine sustains within the SLA")
                         for role in ("prefill", "decode")}
        self.queued_prefill = gauge("engine_queued_prefill_tokens", "Queued prefill tokens, all engines")
        self.queued_decode = gauge("engine_queued_decode_kv_tokens", "Scheduled+queued decode KV tokens, all engines")
        self.load_decision = gauge("load_scaling_decision", "Last load-loop change per pool (+n/0/-n)", ("role",))
        self.load_skipped = Counter(f"{P}_load_decisions_skipped", "Load decisions skipped, by pool and reason "
                                    "(worker_count_mismatch: FPMs do not cover the ready replicas)",
                                    ("role", "reason"), registry=r)
        self.throughput_decision = gauge("throughput_scaling_decision", "Last throughput-loop change per pool",
                                         ("role",))
        self.gpu_hours = Counter(f"{P}_gpu_hours", "GPU hours held by the scaled pools", registry=r)
        self.ticks = Counter(f"{P}_tick", "Planner ticks", ("loop",), registry=r)
        self.tick_errors = Counter(f"{P}_tick_errors", "Ticks that failed", ("loop",), registry=r)
        self.start_timeouts = Counter(f"{P}_replica_start_timeouts", "Scale-ups given up: replicas not ready in time",
                                      ("role",), registry=r)
        self.samples = gauge("perf_model_samples", "FPM samples in the perf model", ("role",))
        self.fpm_messages = Counter(f"{P}_fpm_messages", "Forward-pass-metrics messages received", registry=r)


class MetricsServer:
    def __init__(self, metrics: PlannerMetrics, port: int, healthy) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.http = EmbeddedHttpServer(self.app, "0.0.0.0", port)

    async def app(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            await send_bytes(send, 200, generate_latest(self.metrics.registry), TEXT_HEADERS)
        elif scope["path"] in ("/health", "/live"):
            ok = scope["path"] == "/live" or self.healthy()
            await send_json(send, 200 if ok else 503, {"status": "healthy" if ok else "starting"})
        else:
            await send_json(send, 404, {"error": "not found"})

    async def start(self) -> int:
        await self.http.start()
        return self.http.port

    async def stop(self) -> None:
        await self.http.stop()
