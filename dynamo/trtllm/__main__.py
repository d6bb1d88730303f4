"""`python -m dynamo.trtllm --model-path PATH_OR_ID [flags]`: a worker serving TensorRT-LLM's
LLM API through the worker harness (`dynamo.worker`)."""

from __future__ import annotations

import importlib.util
import sys

from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.process import run_main
from dynamo.trtllm.adapter import TrtllmAdapter
from dynamo.trtllm.args import PROG, DynamoTrtllmArgs, parse_worker_args
from dynamo.worker.harness import WorkerSpec, serve_worker


def worker_spec(config: DynamoTrtllmArgs) -> WorkerSpec:
    return WorkerSpec.of(config, config.role)


def main(argv: list[str] | None = None) -> int:
    config, warnings = parse_worker_args(argv)
    write_config_dump(config, "dynamo.trtllm")
    if importlib.util.find_spec("tensorrt_llm") is None:  # one line, not the engine start's traceback
        print(f"{PROG}: error: TensorRT-LLM is not installed for {sys.executable}: install it (`pip install "
              "tensorrt-llm`, as NVIDIA's guide says) or run this worker with a Python that has it", file=sys.stderr)
        return 2
    return run_main(lambda stop: serve_worker(TrtllmAdapter(config), worker_spec(config), stop, warnings))


if __name__ == "__main__":
    sys.exit(main())
