"""`python -m dynamo.planner --config FILE|JSON`: the SLA planner process.

Like Dynamo 1.6.1 it serves a placeholder `{ns}.Planner.generate` endpoint (answering
`{"text": "health"}`) once the connector is up, so the worker-style `/health` of
`DYN_SYSTEM_PORT` turns ready only after initialisation; `dynamo_planner_*` metrics
are on `metric_reporting_prometheus_port` (or `PLANNER_PROMETHEUS_PORT`).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import msgspec

from dynamo.planner.config import PlannerArgs, PlannerConfig, dumpable, load_config
from dynamo.planner.connectors.base import make_connector
from dynamo.planner.metrics import MetricsServer, PlannerMetrics
from dynamo.planner.observe import FpmCollector
from dynamo.planner.planner import Planner
from dynamo.planner.prometheus import PrometheusClient
from dynamo.runtime.config import build_parser as config_parser
from dynamo.runtime.config import from_namespace
from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import configure_logging, run_main

log = logging.getLogger("dynamo.planner")


def build_parser_for_deploy():
    """The flag parser (`dynamo.deploy validate` checks manifests' planner flags with it)."""
    return config_parser(PlannerArgs, prog="python -m dynamo.planner")


async def serve(cfg: PlannerConfig, stop: asyncio.Event) -> int:
    runtime = await DistributedRuntime.create(None, cfg.namespace)
    metrics = PlannerMetrics()
    options = {"virtual": {"store": runtime.store}, "global-planner": {"runtime": runtime}}.get(cfg.environment, {})
    connector = make_connector(cfg, **options)
    collector = FpmCollector(runtime.store, cfg, metrics)
    prom = prometheus_for(cfg)
    planner = Planner(cfg, connector, collector, prom, metrics)
    for key, value in (("ttft_ms", cfg.ttft_ms), ("itl_ms", cfg.itl_ms)):
        metrics.sla_target[key].set(value)
    server = None
    if cfg.metric_reporting_prometheus_port:
        server = MetricsServer(metrics, cfg.metric_reporting_prometheus_port, lambda: planner.initialized)
        await server.start()
    log.info("planner: %s target, %s mode, environment %s, namespace %s%s", cfg.optimization_target, cfg.mode,
             cfg.environment, cfg.namespace, " (advisory: decisions are logged, not applied)" if cfg.advisory else "")
    task = asyncio.create_task(planner.run(stop), name="planner")
    try:
        await _serve_health_endpoint(runtime, cfg, planner, task)
        await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await collector.close()
        await connector.close()
        if prom is not None:
            await prom.close()
        if server is not None:
            await server.stop()
        await runtime.shutdown()
    return 0


def prometheus_for(cfg: PlannerConfig) -> PrometheusClient | None:
    """The `sla` throughput loop's Prometheus. None configured (e.g. under `dynamo.deploy run` without
    `--prometheus-endpoint`): said once, and the throughput loop is off; the load loop scales on
    forward-pass metrics alone."""
    if cfg.optimization_target != "sla" or not cfg.enable_throughput_scaling:
        return None
    if not cfg.prometheus_endpoint:
        log.warning("planner: no Prometheus configured (prometheus_endpoint / PROMETHEUS_ENDPOINT unset): the "
                    "sla throughput loop is off; scaling on forward-pass metrics only (load loop)")
        cfg.enable_throughput_scaling = False
        cfg.enable_load_scaling = True
        return None
    return PrometheusClient(
        cfg.prometheus_endpoint, timeout=cfg.metric_pulling_prometheus_request_timeout_seconds,
        token=cfg.metric_pulling_prometheus_token, token_file=cfg.metric_pulling_prometheus_token_file,
        ssl_verify=cfg.metric_pulling_prometheus_ssl_verify, ca_bundle=cfg.metric_pulling_prometheus_ca_bundle,
        extra_params=cfg.metric_pulling_prometheus_extra_query_params)


async def _serve_health_endpoint(runtime: DistributedRuntime, cfg: PlannerConfig, planner: Planner,
                                 task: asyncio.Task) -> None:
    while not planner.initialized and not task.done():
        await asyncio.sleep(0.1)
    if task.done():
        return

    async def generate(payload: bytes, ctx):
        yield {"text": "health"}

    await runtime.start_system_server()
    await runtime.serve_endpoint(runtime.endpoint_id(f"{cfg.namespace}.Planner.generate"), generate)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser_for_deploy()
    args = from_namespace(PlannerArgs, parser.parse_args(argv))
    configure_logging()  # the config's environment mappings are logged while it loads
    if not args.config:
        parser.error("--config is required (inline JSON or a .json/.yaml file)")
    try:
        cfg = load_config(args.config, args)
    except FileNotFoundError as exc:
        parser.error(f"--config: {exc}")
    except (ValueError, OSError, msgspec.ValidationError) as exc:
        parser.error(f"invalid planner config: {exc}")
    write_config_dump(args, "dynamo.planner", sections={"planner_config": dumpable(cfg)})
    return run_main(lambda stop: serve(cfg, stop))


build_parser = build_parser_for_deploy  # the name dynamo.deploy's parser registry looks up

if __name__ == "__main__":
    sys.exit(main())
