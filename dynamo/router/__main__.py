"""`python -m dynamo.router --endpoint ns.component.endpoint`: the standalone KV router."""

from __future__ import annotations

import asyncio
import logging
import sys

from dynamo.router.service import RouterService, RouterServiceConfig
from dynamo.runtime import records
from dynamo.runtime.config import parse_config
from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.distributed import DistributedRuntime
from dynamo.runtime.process import run_main

log = logging.getLogger("dynamo.router")


async def serve(config: RouterServiceConfig, stop: asyncio.Event) -> int:
    namespace = records.parse_endpoint(config.endpoint or "").namespace
    runtime = await DistributedRuntime.create(config.discovery_backend, namespace)
    service = RouterService(runtime, config)
    await runtime.start_system_server()
    await service.start()
    log.info("KV router for %s ready (block size %d, mode %s)", service.eid.path, config.router_block_size,
             service.policy.report(service.pool.name).mode)
    await stop.wait()
    await runtime.unregister()
    await service.close()
    await runtime.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    config = parse_config(RouterServiceConfig, argv, prog="python -m dynamo.router")
    write_config_dump(config, "dynamo.router")
    return run_main(lambda stop: serve(config, stop))


if __name__ == "__main__":
    sys.exit(main())
