"""`python -m dynamo.sglang --model-path PATH_OR_ID [SGLang server args] [Dynamo args]`: a
worker serving SGLang's in-process Engine through the worker harness (`dynamo.worker`)."""

from __future__ import annotations

import sys

from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.process import run_main
from dynamo.sglang.adapter import SglangAdapter
from dynamo.sglang.args import SERVER_SECRET_FIELDS, DynamoSglangArgs, parse_args, role_of
from dynamo.worker.harness import WorkerSpec, serve_worker


def worker_spec(config: DynamoSglangArgs, server_args) -> WorkerSpec:
    return WorkerSpec.of(config, role_of(server_args))


def main(argv: list[str] | None = None) -> int:
    config, server_args, warnings = parse_args(argv)
    write_config_dump(config, "dynamo.sglang", sections={"server_args": server_args}, redact=SERVER_SECRET_FIELDS)
    return run_main(lambda stop: serve_worker(SglangAdapter(config, server_args), worker_spec(config, server_args),
                                              stop, warnings))


if __name__ == "__main__":
    sys.exit(main())
