"""`python -m dynamo.router --endpoint ns.component.endpoint`: the standalone KV router."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Mapping, Sequence

from dynamo.router.compat_flags import ROUTER_SERVICE_FLAGS
from dynamo.router.service import RouterService, RouterServiceConfig
from dynamo.runtime.compat_args import parse_with_compat
from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main

log = logging.getLogger("dynamo.router")


async def serve(config: RouterServiceConfig, stop: asyncio.Event, warnings: Sequence[str] = ()) -> int:
    for text in warnings:  # NVIDIA Dynamo flags accepted without effect, now that logging is set up
        log.warning("%s", text)
    runtime = await DistributedRuntime.create(config.discovery_backend, config.namespace)
    service = RouterService(runtime, config)
    await runtime.start_system_server()
    await service.start()
    log.info("KV router for %s ready (block size %s, mode %s)", service.eid.path,
             config.router_block_size or "from the workers' model cards",
             service.policy.report(service.pool.name).mode)
    await stop.wait()
    # Out of discovery, new requests answered `draining` (callers go to another router), and the streams it
    # relays run to completion within the drain limit before they are cut.
    if not await runtime.drain(runtime.settings.drain_secs()):
        log.warning("%d stream(s) still running at the drain limit; cutting them", runtime.server.inflight())
    await service.close()
    await runtime.shutdown()
    return 0


def parse_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
               ) -> tuple[RouterServiceConfig, list[str]]:
    """(the router's config, a warning per NVIDIA Dynamo flag or `--router-policy-config` entry that has no
    effect here)."""
    config, warnings = parse_with_compat(RouterServiceConfig, ROUTER_SERVICE_FLAGS, argv, prog="python -m dynamo.router",
                                         environ=environ)
    return config, warnings + config.policy_warnings()


def main(argv: list[str] | None = None) -> int:
    config, warnings = parse_args(argv)
    write_config_dump(config, "dynamo.router")
    return run_main(lambda stop: serve(config, stop, warnings))


if __name__ == "__main__":
    sys.exit(main())
