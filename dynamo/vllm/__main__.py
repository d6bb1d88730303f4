"""`python -m dynamo.vllm --model PATH_OR_ID [vLLM engine args] [Dynamo args]`: a worker
serving vLLM's AsyncLLM (in-process) on the request plane.

Lifecycle: system server first (/health 503 while the engine loads) -> engine -> KV-event
relay and load publisher -> model card from the engine's real config -> serve. The engine
dying makes the worker report unhealthy, leave discovery and exit 1. SIGTERM: leave
discovery, let in-flight requests finish within DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS
(default 5), abort the rest, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from prometheus_client import Gauge

from dynamo.llm.forward_pass import start_fpm_relay
from dynamo.llm.kv_events.publisher import KvEventPublisher, LoadPublisher
from dynamo.llm.model_card import RuntimeConfig, build_card, card_encoder
from dynamo.llm.kv_events.engine_decoder import EngineEventDecoder
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main
from dynamo.vllm import disagg
from dynamo.vllm.args import DynamoVllmArgs, parse_args
from dynamo.vllm.forward_pass import fpm_stat_logger_factory
from dynamo.vllm.engine import EngineFacts, apply_dynamo_defaults, engine_facts, kv_event_endpoints, start_engine
from dynamo.vllm.events import EngineStats, KvEventRelay, stat_logger_factory
from dynamo.vllm.handler import RequestHandler

log = logging.getLogger("dynamo.vllm")

WORKER_TYPES = {"agg": "aggregated", "prefill": "prefill", "decode": "decode"}
ENGINE_POLL_SECONDS = 1.0


def engine_gauges(runtime: DistributedRuntime, engine, stats: EngineStats, handler: RequestHandler,
                  relay: KvEventRelay | None) -> None:
    """Engine state on the worker's /metrics, read at scrape time."""
    reg = runtime.registry
    for name, doc, fn in (
        ("dynamo_vllm_kv_events_relayed", "KV events relayed from vLLM to the event plane (-1: publishing off)",
         lambda: relay.relayed if relay is not None else -1),
        ("dynamo_vllm_unfinished_requests", "Requests vLLM's output processor still tracks",
         engine.get_num_unfinished_requests),
        ("dynamo_vllm_running_requests", "Running requests (vLLM scheduler stats)", lambda: stats.running),
        ("dynamo_vllm_waiting_requests", "Waiting requests (vLLM scheduler stats)", lambda: stats.waiting),
        ("dynamo_vllm_handler_inflight_requests", "Requests inside the engine handler", lambda: handler.inflight),
        ("dynamo_component_kvstats_active_blocks", "KV blocks in use",
         lambda: round(stats.kv_usage * stats.total_blocks)),
        ("dynamo_component_kvstats_total_blocks", "KV blocks in total", lambda: stats.total_blocks),
        ("dynamo_component_kvstats_gpu_cache_usage_percent", "KV cache usage (0-1)", lambda: stats.kv_usage),
        ("dynamo_component_kvstats_gpu_prefix_cache_hit_rate", "Prefix cache hit rate",
         lambda: stats.prefix_hit_rate),
    ):
        Gauge(name, doc, registry=reg).set_function(fn)


def model_card(config: DynamoVllmArgs, facts: EngineFacts, publishes_kv_events: bool) -> bytes:
    card = build_card(facts.model_dir, name=facts.served_name, block_size=facts.block_size,
                      context_length=facts.max_model_len, worker_type=WORKER_TYPES[config.mode],
                      migration_limit=config.migration_limit, model_type=config.model_types,
                      runtime_config=RuntimeConfig(total_kv_blocks=facts.num_blocks, max_num_seqs=facts.max_num_seqs,
                                                   max_num_batched_tokens=facts.max_num_batched_tokens,
                                                   data_parallel_size=facts.data_parallel_size,
                                                   publishes_kv_events=publishes_kv_events,
                                                   runtime_data={"engine": "vllm"}))
    return card_encoder.encode(card)


async def watch_engine(engine, dead: asyncio.Event) -> None:
    """Sets `dead` once vLLM reports its engine core gone (process died or errored)."""
    while not engine.errored:
        await asyncio.sleep(ENGINE_POLL_SECONDS)
    dead.set()


async def first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()


async def serve(config: DynamoVllmArgs, engine_args, stop: asyncio.Event) -> int:
    runtime = await DistributedRuntime.create(config.discovery_backend, config.namespace)
    await runtime.start_system_server()  # /health answers 503 while the engine loads
    eid = runtime.endpoint_id(config.default_endpoint())
    xfer = disagg.setup_worker(engine_args, config, runtime.registry)
    publishes = apply_dynamo_defaults(engine_args, config)
    stats = EngineStats(total_slots=0)
    fpm, kv_tokens = await start_fpm_relay(runtime, eid.namespace, eid.component), [0]  # forward-pass metrics
    try:
        engine = await start_engine(engine_args, [stat_logger_factory(stats), *disagg.stat_loggers(xfer),
                                                  fpm_stat_logger_factory(fpm.push, f"{runtime.instance_id:x}",
                                                                          lambda: kv_tokens[0])])
    except Exception:
        log.exception("vLLM engine failed to start")
        await fpm.close()
        await runtime.shutdown()
        return 1
    closers = [fpm.close]
    try:
        facts = engine_facts(engine, engine_args)
        kv_tokens[0] = facts.num_blocks * facts.block_size
        stats.total_slots, stats.total_blocks = facts.max_num_seqs, facts.num_blocks
        relay = None
        if publishes:
            kv_pub = await KvEventPublisher.create(config.event_plane, runtime.store, eid.namespace, eid.component,
                                                   runtime.instance_id)
            relay = KvEventRelay(kv_event_endpoints(engine, engine_args), engine_args.kv_events_config.topic,
                                 EngineEventDecoder(runtime.instance_id, facts.block_size), kv_pub)
            relay.start()
            closers += [relay.close, kv_pub.close]
        load = await LoadPublisher.create(config.event_plane, runtime.store, eid.namespace, eid.component,
                                          runtime.instance_id, lambda: stats.load_metrics(runtime.instance_id))
        closers.append(load.close)
        handler = RequestHandler(engine, facts.max_model_len, config.mode, config.engine_request_limit,
                                 disagg.params_hook(xfer, engine, config.mode))
        engine_gauges(runtime, engine, stats, handler, relay)
        await runtime.serve_endpoint(eid, handler.generate, card_json=model_card(config, facts, publishes))
        log.info("Worker %s initialized (instance %x)", eid.path, runtime.instance_id)  # guides' readiness grep
        log.info("vLLM worker ready: model %r (%s), %d KV blocks of %d tokens, max_num_seqs %d, context %d, "
                 "mode %s, KV events %s", facts.served_name, facts.model, facts.num_blocks, facts.block_size,
                 facts.max_num_seqs, facts.max_model_len, config.mode, "on" if publishes else "off")
        dead = asyncio.Event()
        watcher = asyncio.get_running_loop().create_task(watch_engine(engine, dead))
        await first_of(stop, dead)
        watcher.cancel()
        if dead.is_set():
            log.error("vLLM engine died; leaving discovery and exiting")
            runtime.health.engine_ok = False
            await runtime.unregister()
            return 1
        await drain(runtime)
        return 0
    finally:
        for close in closers:
            await close()
        engine.shutdown()
        await runtime.shutdown()


async def drain(runtime: DistributedRuntime) -> None:
    """Graceful stop: no new requests, in-flight ones get the grace period, then abort."""
    grace = float(os.environ.get("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "5"))
    await runtime.unregister()
    if runtime.server is None:
        return
    await runtime.server.stop_accepting()
    if not await runtime.server.drain(grace):
        log.warning("%d request(s) still running after %gs grace; aborting them", runtime.server.inflight(), grace)
    await runtime.server.close()  # cancels what is left: each handler aborts its engine request
    await asyncio.sleep(0.1)  # let the aborts reach the engine core before it shuts down


def main(argv: list[str] | None = None) -> int:
    config, engine_args = parse_args(argv)
    return run_main(lambda stop: serve(config, engine_args, stop))


if __name__ == "__main__":
    sys.exit(main())
