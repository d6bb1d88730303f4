"""`python -m dynamo.vllm --model PATH_OR_ID [vLLM engine args] [Dynamo args]`: a worker
serving vLLM's AsyncLLM (in-process) through the worker harness (`dynamo.worker`):
/health 503 while the engine loads, KV events relayed from vLLM's publisher, the model
card from the engine's real config, drain on SIGTERM, exit 1 when the engine dies.
"""

from __future__ import annotations

import sys

from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.process import run_main
from dynamo.vllm.adapter import VllmAdapter
from dynamo.vllm.args import ENGINE_SECRET_FIELDS, DynamoVllmArgs, parse_args
from dynamo.worker.harness import WorkerSpec, serve_worker


def worker_spec(config: DynamoVllmArgs) -> WorkerSpec:
    return WorkerSpec.of(config, config.mode)


def main(argv: list[str] | None = None) -> int:
    config, engine_args, warnings = parse_args(argv)
    write_config_dump(config, "dynamo.vllm", sections={"engine_args": engine_args}, redact=ENGINE_SECRET_FIELDS)
    return run_main(lambda stop: serve_worker(VllmAdapter(config, engine_args), worker_spec(config), stop, warnings))


if __name__ == "__main__":
    sys.exit(main())
