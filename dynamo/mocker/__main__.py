"""`python -m dynamo.mocker --model-path DIR`: a worker serving the simulated engine through
the worker harness (`dynamo.worker`): it registers its model card and publishes KV events
and load metrics exactly as a real engine worker does."""

from __future__ import annotations

import sys

from dynamo.mocker.adapter import MockerAdapter
from dynamo.mocker.args import MockerArgs, resolve_model_dir
from dynamo.mocker.compat_flags import parse_mocker_args
from dynamo.runtime.config_dump import write_config_dump
from dynamo.runtime.process import run_main
from dynamo.worker.harness import WorkerSpec, serve_worker


def worker_spec(args: MockerArgs) -> WorkerSpec:
    return WorkerSpec(namespace=args.worker_namespace, endpoint=args.endpoint,
                      discovery_backend=args.discovery_backend, role=args.mode,
                      migration_limit=args.migration_limit, event_plane=args.event_plane, card_args=args)


def main(argv: list[str] | None = None) -> int:
    args, warnings = parse_mocker_args(argv)
    write_config_dump(args, "dynamo.mocker")
    try:  # first, as Dynamo's mocker prefetches it: a wrong --model-path is one line, not the engine's traceback
        resolve_model_dir(args.model_path)
    except ValueError as exc:
        print(f"python -m dynamo.mocker: error: {exc}", file=sys.stderr)
        return 2
    return run_main(lambda stop: serve_worker(MockerAdapter(args), worker_spec(args), stop, warnings))


if __name__ == "__main__":
    sys.exit(main())
