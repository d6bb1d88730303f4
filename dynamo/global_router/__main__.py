"""`python -m dynamo.global_router --config plan.json --model-name M`: NVIDIA Dynamo's Global Router, a
router of pools, between a frontend and the local routers of several pool namespaces (see `pools.py`
for the plan, `handler.py` for the request path).

It serves, in `--namespace` (DYN_NAMESPACE) under `--component-name` (default `global_router`):
- mode `disagg`: `prefill_generate` with a prefill model card and `decode_generate` with a decode card,
  so a frontend sees one prefill/decode pair and disaggregates through it;
- mode `agg`: `generate` with an aggregated card.
Cards are built from the model's files (`--model-path`, default `--model-name`: a local directory or a
cached Hugging Face id) and carry the model-card flags workers take (`--dyn-tool-call-parser`,
`--dyn-reasoning-parser`, ...), so the frontend parses the model's output as it would from its workers.
A plan Dynamo would refuse exits 2 before anything is registered. The model is registered once every pool
has a local router and a worker (or after `--pool-ready-timeout-secs`), so a frontend does not see it
before it can be served.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from dataclasses import dataclass

import msgspec

from dynamo.global_router.handler import GlobalRouter, PoolRouters
from dynamo.global_router.pools import PoolConfigError, PoolPlan, load_plan
from dynamo.llm.model_card import (DEFAULT_THINKING_MODE_KEY, ModelDeploymentCard, RuntimeConfig, WorkerType,
                                   build_card, card_record)
from dynamo.llm.worker_client import StreamDeadlineSettings, WorkerClient
from dynamo.runtime import records
from dynamo.runtime.config import build_parser, from_namespace, setting
from dynamo.runtime.config_dump import DumpConfigTo, write_config_dump
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main
from dynamo.runtime.settings import discovery_backend_setting
from dynamo.worker.engine_args import ModelCardArgs
from dynamo.worker.model_files import local_model_dir

log = logging.getLogger("dynamo.global_router")

BLOCK_SIZE = 16  # the cards' KV block size: a global router holds no KV cache; its pools' routers do
# mode -> (role in the plan, endpoint, card worker_type)
ENDPOINTS = {
    "disagg": (("prefill", "prefill_generate", WorkerType.PREFILL), ("decode", "decode_generate", WorkerType.DECODE)),
    "agg": (("agg", "generate", WorkerType.AGGREGATED),),
}


@dataclass
class GlobalRouterArgs(ModelCardArgs, StreamDeadlineSettings, DumpConfigTo):
    """Global router: sends each request to the pool its SLA targets and length call for."""

    config_path: str | None = setting(None, "JSON file of pool namespaces and selection grids (required)",
                                      env="DYN_GLOBAL_ROUTER_CONFIG", flag="--config")
    model_name: str | None = setting(None, "Model name served (the frontend's `model`; required)",
                                     env="DYN_GLOBAL_ROUTER_MODEL_NAME")
    model_path: str | None = setting(None, "Model files for the model card (default: --model-name)",
                                     env="DYN_GLOBAL_ROUTER_MODEL_PATH")
    namespace: str = setting("dynamo", "Dynamo namespace the global router serves in", env="DYN_NAMESPACE")
    component_name: str = setting("global_router", "Component name of its endpoints",
                                  env="DYN_GLOBAL_ROUTER_COMPONENT_NAME")
    default_ttft_target_ms: float | None = setting(
        None, "TTFT target (ms) of a request that gives none (default: the middle of the plan's range)",
        env=("DYN_GLOBAL_ROUTER_DEFAULT_TTFT_TARGET_MS", "DYN_GLOBAL_ROUTER_DEFAULT_TTFT_TARGET"),
        flag=["--default-ttft-target-ms", "--default-ttft-target"])
    default_itl_target_ms: float | None = setting(
        None, "ITL target (ms) of a request that gives none (default: the middle of the plan's range)",
        env=("DYN_GLOBAL_ROUTER_DEFAULT_ITL_TARGET_MS", "DYN_GLOBAL_ROUTER_DEFAULT_ITL_TARGET"),
        flag=["--default-itl-target-ms", "--default-itl-target"])
    pool_ready_timeout_secs: float = setting(
        60.0, "At start, seconds to wait for every pool to have a local router and a worker before the model is "
              "registered (then registered anyway, naming the pools still missing)",
        env="DYN_GLOBAL_ROUTER_POOL_READY_TIMEOUT_SECS")
    discovery_backend: str = discovery_backend_setting()

    def validate(self) -> None:
        if not (self.config_path or "").strip():
            raise ValueError("config_path must be set via --config or DYN_GLOBAL_ROUTER_CONFIG")
        if not (self.model_name or "").strip():
            raise ValueError("model_name must be set via --model-name or DYN_GLOBAL_ROUTER_MODEL_NAME")
        if self.pool_ready_timeout_secs < 0:
            raise ValueError("--pool-ready-timeout-secs must be >= 0")
        self.check_card_args()
        self.check_deadlines()


def build_parser_for_deploy():
    """The flag parser (`dynamo.deploy validate` checks manifests' global router flags with it)."""
    return build_parser(GlobalRouterArgs, prog="python -m dynamo.global_router")


def card(args: GlobalRouterArgs, model_dir: str) -> ModelDeploymentCard:
    """The model card of the faces: the model's files, and how the frontend presents its output (each face
    sets its own worker_type, which the card's checksum does not cover)."""
    runtime_data = {"engine": "global_router"}
    if args.default_thinking_mode is not None:
        runtime_data[DEFAULT_THINKING_MODE_KEY] = args.default_thinking_mode
    runtime_config = RuntimeConfig(tool_call_parser=args.tool_call_parser, reasoning_parser=args.reasoning_parser,
                                   runtime_data=runtime_data)
    return build_card(model_dir, name=args.model_name, block_size=BLOCK_SIZE, runtime_config=runtime_config,
                      chat_template=args.custom_jinja_template)


async def serve(args: GlobalRouterArgs, plan: PoolPlan, stop: asyncio.Event) -> int:
    # One runtime (one instance id) per face: a frontend knows a worker by its instance id, and the
    # prefill and decode faces must look like two workers, as a prefill and a decode engine do.
    runtimes = [await DistributedRuntime.create(args.discovery_backend, args.namespace)
                for _ in ENDPOINTS[plan.mode]]
    main_rt = runtimes[0]
    routers = PoolRouters(main_rt.store, {ns for pools in plan.pools.values() for ns in pools.namespaces})
    router = GlobalRouter(plan, routers, WorkerClient(main_rt.client, args.deadlines()), main_rt.registry,
                          args.default_ttft_target_ms, args.default_itl_target_ms)
    for text in plan.warnings:
        log.warning("global router config: %s", text)
    try:
        await main_rt.start_system_server()
        await routers.start()
        missing = await routers.wait_ready(args.pool_ready_timeout_secs)
        if missing:
            log.warning("pools without a local router (<ns>.router.generate) or a worker after %g s: %s; their "
                        "requests fail until they have one", args.pool_ready_timeout_secs, ", ".join(missing))
        model_card = card(args, local_model_dir(args.model_path or args.model_name or ""))  # files read once
        router.faces = {runtime.instance_id for runtime in runtimes}
        for (role, endpoint, worker_type), runtime in zip(ENDPOINTS[plan.mode], runtimes):
            eid = records.EndpointId(args.namespace, args.component_name, endpoint)
            face = msgspec.structs.replace(model_card, worker_type=worker_type)
            await runtime.serve_endpoint(eid, functools.partial(router.handle, role),
                                         card_json=card_record(face, *eid, runtime.instance_id))
        for role, pools in plan.pools.items():
            log.info("%s pools: %s", role, ", ".join(f"{i}: {ns}" for i, ns in enumerate(pools.namespaces)))
        log.info("Global router ready (%s mode, model %r): %s", plan.mode, args.model_name,
                 ", ".join(f"{args.namespace}.{args.component_name}.{e}" for _, e, _ in ENDPOINTS[plan.mode]))
        await stop.wait()
    finally:
        await routers.close()
        limit = main_rt.settings.drain_secs()  # the streams it relays run to completion within it
        await asyncio.gather(*(rt.shutdown(grace=limit) for rt in runtimes), return_exceptions=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser_for_deploy()
    args = from_namespace(GlobalRouterArgs, parser.parse_args(argv))
    try:
        args.validate()
        plan = load_plan(args.config_path or "")
    except ValueError as exc:  # PoolConfigError included
        parser.error(str(exc))
    write_config_dump(args, "dynamo.global_router")
    return run_main(lambda stop: serve(args, plan, stop))


__all__ = ["GlobalRouterArgs", "PoolConfigError", "main"]

if __name__ == "__main__":
    sys.exit(main())
