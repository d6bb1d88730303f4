"""`python -m dynamo.mocker --model-path DIR`: a worker process serving the simulated
engine on the request plane, registering its model card, and publishing KV events
and load metrics, exactly like a real engine worker would."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from prometheus_client import Gauge

from dynamo.llm.forward_pass import start_fpm_relay
from dynamo.llm.kv_events.publisher import KvEventPublisher, LoadPublisher
from dynamo.llm.model_card import RuntimeConfig, build_card, card_encoder
from dynamo.llm.protocol import request_decoder
from dynamo.llm.tokenizer import Tokenizer
from dynamo.mocker.args import MockerArgs
from dynamo.mocker.engine import MockEngine
from dynamo.llm.kv_events.local_state import KV_QUERY_ENDPOINT, LocalKvState
from dynamo.runtime.config import parse_config
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main
from dynamo.runtime.rp_server import HandlerError, RequestContext

log = logging.getLogger("dynamo.mocker")

WORKER_TYPES = {"agg": "aggregated", "prefill": "prefill", "decode": "decode"}


def engine_gauges(runtime: DistributedRuntime, engine: MockEngine) -> None:
    """Engine state as gauges on the worker's /metrics, read at scrape time."""
    reg = runtime.registry
    for name, doc, fn in (
        ("dynamo_mocker_running_requests", "Sequences in the running batch", lambda: engine.num_running),
        ("dynamo_mocker_waiting_requests", "Sequences waiting for admission", lambda: engine.num_waiting),
        ("dynamo_mocker_preemptions", "Sequences preempted so far", lambda: engine.num_preemptions),
        ("dynamo_component_kvstats_active_blocks", "KV blocks in use", lambda: engine.kv.num_active_blocks),
        ("dynamo_component_kvstats_total_blocks", "KV blocks in total", lambda: engine.kv.capacity),
        ("dynamo_component_kvstats_gpu_prefix_cache_hit_rate", "Prefix cache hit rate",
         lambda: engine.prefix_cache_hit_rate),
    ):
        Gauge(name, doc, registry=reg).set_function(fn)


async def serve(args: MockerArgs, stop: asyncio.Event) -> int:
    if not args.model_path or not os.path.isdir(args.model_path):
        log.error("--model-path must be a model directory (got %r)", args.model_path)
        return 2
    args = args.resolved()
    tokenizer = Tokenizer.from_dir(args.model_path)
    runtime = await DistributedRuntime.create(args.discovery_backend, args.namespace)
    eid = runtime.endpoint_id(args.default_endpoint())
    kv_events = await KvEventPublisher.create(None, runtime.store, eid.namespace, eid.component,
                                              runtime.instance_id)
    local_kv = LocalKvState(runtime.instance_id)  # answers routers that lost events

    def on_kv_event(event):
        local_kv.observe(event)
        kv_events.push(event)

    engine = MockEngine(args, vocab_size=tokenizer.vocab_size, context_length=args.context_length,
                        eos_token_ids=tokenizer.eos_token_ids, special_ids=tokenizer.special_ids,
                        on_kv_event=on_kv_event)
    if args.startup_time:
        await asyncio.sleep(args.startup_time)
    fpm = await start_fpm_relay(runtime, eid.namespace, eid.component)
    engine.publish_forward_passes(fpm.push, f"{runtime.instance_id:x}")
    await engine.start()
    load = await LoadPublisher.create(None, runtime.store, eid.namespace, eid.component, runtime.instance_id,
                                      lambda: engine.metrics(runtime.instance_id))
    engine_gauges(runtime, engine)
    await runtime.start_system_server()

    async def generate(payload: bytes, ctx: RequestContext):
        try:
            request = request_decoder.decode(payload)
        except Exception as exc:
            raise HandlerError(f"malformed request: {exc}", "bad_request") from None
        async for output in engine.generate(request):
            yield output

    card = build_card(args.model_path, name=args.model_name or args.model_path, block_size=args.block_size,
                      context_length=args.context_length, worker_type=WORKER_TYPES[args.mode],
                      migration_limit=args.migration_limit,
                      runtime_config=RuntimeConfig(total_kv_blocks=args.num_gpu_blocks_override,
                                                   max_num_seqs=args.max_num_seqs,
                                                   max_num_batched_tokens=args.max_num_batched_tokens,
                                                   publishes_kv_events=args.enable_prefix_caching,
                                                   enable_local_indexer=args.enable_prefix_caching))
    await runtime.serve_endpoint(runtime.endpoint_id(f"{eid.namespace}.{eid.component}.{KV_QUERY_ENDPOINT}"),
                                 local_kv.handler)
    await runtime.serve_endpoint(eid, generate, card_json=card_encoder.encode(card))
    log.info("Worker %s initialized (instance %x)", eid.path, runtime.instance_id)  # guides' readiness grep
    log.info("mocker ready: model %r, %d KV blocks of %d tokens, speedup %g, mode %s", card.display_name,
             args.num_gpu_blocks_override, args.block_size, args.speedup_ratio, args.mode)
    await stop.wait()
    grace = float(os.environ.get("DYN_GRACEFUL_SHUTDOWN_GRACE_PERIOD_SECS", "5"))
    await runtime.unregister()
    if runtime.server is not None:
        await runtime.server.stop_accepting()
        await runtime.server.drain(grace)
    await engine.stop()
    await load.close()
    await fpm.close()
    await kv_events.close()
    await runtime.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_config(MockerArgs, argv, prog="python -m dynamo.mocker")
    return run_main(lambda stop: serve(args, stop))


if __name__ == "__main__":
    sys.exit(main())
