"""`python -m tests.worker.standin_worker sglang|trtllm [flags]`: the real worker harness and
the real sglang/trtllm adapter, over the engine STAND-INS of `standins.py` (tests only).

It is `python -m dynamo.sglang` / `python -m dynamo.trtllm` with the engine swapped for its
stand-in, so the frontend, discovery, the request plane and disaggregation run for real.
SGLang flags go through the static table (SGLang is not installed in the main venv).
"""

from __future__ import annotations

import sys

from dynamo.runtime.process import run_main
from dynamo.worker.harness import serve_worker
from tests.worker import standins


def sglang(argv: list[str]):
    from dynamo.sglang.__main__ import worker_spec
    from dynamo.sglang.adapter import SglangAdapter
    from dynamo.sglang.args import build_parser, split_namespace

    config, ns = split_namespace(build_parser(use_sglang=False).parse_args(argv))
    sa = standins.SglangServerArgsStandIn(
        model_path=ns.model_path, served_model_name=ns.served_model_name, page_size=int(ns.page_size or 4),
        disaggregation_mode=ns.disaggregation_mode or "null",
        disaggregation_bootstrap_port=int(ns.disaggregation_bootstrap_port or 8998),
        enable_metrics=bool(getattr(ns, "enable_metrics", False)))
    return SglangAdapter(config, sa, engine_factory=standins.SglangEngineStandIn), worker_spec(config, sa)


def trtllm(argv: list[str]):
    from dynamo.trtllm.__main__ import worker_spec
    from dynamo.trtllm.adapter import TrtllmAdapter
    from dynamo.trtllm.args import parse_args

    config = parse_args(argv)
    return TrtllmAdapter(config, api=standins.trtllm_api_standin()), worker_spec(config)


def main() -> int:
    engine, argv = sys.argv[1], sys.argv[2:]
    adapter, spec = {"sglang": sglang, "trtllm": trtllm}[engine](argv)
    return run_main(lambda stop: serve_worker(adapter, spec, stop))


if __name__ == "__main__":
    sys.exit(main())
