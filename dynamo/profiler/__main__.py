"""`python -m dynamo.profiler --config DGDR.yaml [--output-dir DIR] [--dry-run]`: profile a
DynamoGraphDeploymentRequest into `final_config.yaml` and `profiler_status.yaml`. Like Dynamo's profiler
it deploys nothing, whatever `autoApply` says (there the operator applies the DGD): the status says how
to run it (`python -m dynamo.deploy run final_config.yaml`, or `dynamo.deploy run DGDR.yaml`, which
profiles and runs in one step)."""

from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from dynamo.profiler import dgdr, dgdr_v1alpha1
from dynamo.profiler.pipeline import Options, load_request, run, unreadable
from dynamo.profiler.status import SpecChanged
from dynamo.profiler.thorough import MAX_DECODE_CONCURRENCY, SweepOptions
from dynamo.runtime.config import parse_config, setting
from dynamo.runtime.config_dump import DumpConfigTo, write_config_dump
from dynamo.runtime.process import configure_logging


@dataclass
class ProfilerArgs(DumpConfigTo):
    """Profile a DGDR (rapid: AIConfigurator; thorough: measured local deployments). Sweep settings
    also read `DYN_PROFILER_*`, which is how `dynamo.deploy run|render DGDR.yaml` takes them."""

    config: str | None = setting(None, "DGDR (v1beta1) YAML/JSON file, or its bare spec", env=False)
    output_dir: str = setting("profiling_results", "Where results, plots and final_config.yaml go", env=False)
    dry_run: bool = setting(False, "Validate the request and stop", env=False)
    model: str | None = setting(None, "Local model dir (tokenizer/config) replacing the hub id in thorough "
                                "candidates and the sweep's context (the profile then describes that model)",
                                env=False)
    accept_unmet_sla: bool = setting(True, "Deploy the best configuration found when the SLA cannot be met (the "
                                           "default, as in Dynamo; kept for scripts that pass it)", env=False)
    refuse_unmet_sla: bool = setting(False, "Stop with exit 3 instead when the SLA cannot be met (nothing deployed; "
                                            "final_config.yaml and the notes are still written)",
                                     env="DYN_PROFILER_REFUSE_UNMET_SLA")
    prefill_interpolation_granularity: int = setting(16, "ISL points of the prefill sweep",
                                                     env="DYN_PROFILER_PREFILL_INTERPOLATION_GRANULARITY")
    decode_interpolation_granularity: int = setting(6, "Context lengths of the decode sweep",
                                                    env="DYN_PROFILER_DECODE_INTERPOLATION_GRANULARITY")
    decode_osl: int = setting(500, "OSL of the decode sweep (Dynamo: 500)", env="DYN_PROFILER_DECODE_OSL")
    concurrency_points: int = setting(6, "Concurrency points per context length in the decode sweep",
                                      env="DYN_PROFILER_CONCURRENCY_POINTS")
    max_concurrency: int = setting(MAX_DECODE_CONCURRENCY, "Cap on decode sweep concurrency",
                                   env="DYN_PROFILER_MAX_CONCURRENCY")
    max_context_length: int = setting(1 << 30, "Cap on swept context (default: the model's)",
                                      env="DYN_PROFILER_MAX_CONTEXT_LENGTH")
    tp_sizes: list = setting([1], "Candidate tensor-parallel sizes (thorough)", env="DYN_PROFILER_TP_SIZES")
    mocker_speedup_ratio: float = setting(1.0, "Mocker candidates' decode sweep runs this much faster (scaled back); "
                                          "prefill TTFT is measured in real time",
                                          env="DYN_PROFILER_MOCKER_SPEEDUP_RATIO")
    append_args: dict = setting({}, 'Extra flags per candidate service, JSON {"Service": "--flag v"}',
                                env="DYN_PROFILER_APPEND_ARGS")
    service_env: dict = setting({}, 'Extra env per candidate service, JSON {"Service": {"NAME": "value"}}',
                                env="DYN_PROFILER_SERVICE_ENV")
    deploy_python: str | None = setting(None, "Python that runs `dynamo.deploy run` for candidates and the result "
                                        "(e.g. a vLLM venv; default: this one)", env="DYN_PROFILER_DEPLOY_PYTHON")
    deployment_timeout: float = setting(3600.0, "Seconds a candidate deployment may take to become ready",
                                        env="DYN_PROFILER_DEPLOYMENT_TIMEOUT")


def options(args: ProfilerArgs) -> Options:
    sweep = SweepOptions(prefill_granularity=args.prefill_interpolation_granularity,
                         decode_granularity=args.decode_interpolation_granularity, decode_osl=args.decode_osl,
                         concurrency_points=args.concurrency_points, max_concurrency=args.max_concurrency,
                         max_context=args.max_context_length, speedup_ratio=args.mocker_speedup_ratio,
                         tp_sizes=[int(t) for t in args.tp_sizes],
                         append_args={k: str(v).split() for k, v in args.append_args.items()},
                         service_env={k: {n: str(v) for n, v in e.items()} for k, e in args.service_env.items()},
                         ready_timeout=args.deployment_timeout, deploy_python=args.deploy_python)
    return Options(output_dir=Path(args.output_dir), model_dir=args.model, dry_run=args.dry_run,
                   refuse_unmet_sla=args.refuse_unmet_sla, sweep=sweep)


def with_request_settings(args: ProfilerArgs, req: dgdr.Request) -> ProfilerArgs:
    """Sweep settings a v1alpha1 request's config gave (granularity, GPUs per engine, timeout),
    where neither a flag nor DYN_PROFILER_* set them: flags win, as they did in Dynamo's profiler."""
    defaults = ProfilerArgs()
    for name, value in dgdr_v1alpha1.profiler_settings(req.metadata.annotations).items():
        if getattr(args, name) == getattr(defaults, name):
            setattr(args, name, value)
            logging.getLogger("dynamo.profiler").info("%s = %s (from the request's profilingConfig)", name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_config(ProfilerArgs, argv, prog="python -m dynamo.profiler")
    configure_logging()
    logging.getLogger("dynamo.profiler").setLevel(logging.INFO)
    if not args.config:
        print("error: --config DGDR.yaml is required", file=sys.stderr)
        return 2
    try:
        req = load_request(args.config)
    except (OSError, ValueError, yaml.YAMLError) as exc:  # a malformed file is one line, as `dynamo.deploy` says it
        print(f"error: {unreadable(args.config, exc)}", file=sys.stderr)
        return 2
    args = with_request_settings(args, req)
    write_config_dump(args, "dynamo.profiler")
    try:
        return asyncio.run(run(req, options(args)))
    except SpecChanged as exc:  # the spec changed under a frozen profile: refused, as a webhook refuses it
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
