"""DGDR → profile → DGD → (autoApply) deployment: the one flow behind `python -m dynamo.profiler`
(which stops at the DGD, as Dynamo's) and `python -m dynamo.deploy run|render DGDR.yaml` (which run it
here when autoApply, `apply.py`, or render it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shlex
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, TypeVar

import yaml

from dynamo.llm.perf_data import Profile, write_profile
from dynamo.profiler import dgdr
from dynamo.profiler.aic_curves import rapid_profile, wants_curves, without_curves
from dynamo.profiler.apply import deploy, not_deployed, run_flags, unapplied
from dynamo.profiler.dgd import (DGD_API, Choice, dgd_backend, dgd_name, final_documents, planner_config,
                                 profile_configmap)
from dynamo.profiler.dgdr_v1alpha1 import planner_problem
from dynamo.profiler.plots import plot_decode, plot_prefill
from dynamo.profiler.rapid import rapid
from dynamo.profiler.status import SpecChanged, Status
from dynamo.profiler.thorough import SweepOptions, measure_candidate, select

log = logging.getLogger("dynamo.profiler")
FINAL = "final_config.yaml"
T = TypeVar("T")


@dataclass
class Options:
    output_dir: Path = Path("profiling_results")
    model_dir: str | None = None
    dry_run: bool = False
    caller: str = "profiler"  # `python -m dynamo.profiler`; `run` (deploys when autoApply) or `render` DGDR.yaml
    refuse_unmet_sla: bool = False  # stop (exit 3) instead of deploying the best config found
    sweep: SweepOptions = field(default_factory=SweepOptions)
    frontend_port: int = 8000
    control_port: int = 0  # of the deployment (0: a free one)
    run_flags: list[str] = field(default_factory=list)  # the deployment's other `dynamo.deploy run` flags


def load_request(path: str | Path, notes: list[str] | None = None) -> dgdr.Request:
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    reqs = [d for d in docs if isinstance(d, dict) and d.get("kind", dgdr.KIND) == dgdr.KIND]
    if len(reqs) != 1:
        raise ValueError(f"{path}: expected one {dgdr.KIND}, found {len(reqs)}")
    return dgdr.parse(reqs[0], notes)


def unreadable(path: str | Path, exc: Exception) -> str:
    """A request file that could not be read or admitted, in one line: a parser's error (its several
    lines, the mark) joined; our own errors (already naming the field) as they are."""
    if isinstance(exc, yaml.YAMLError):
        return f"{path}: cannot read: " + " ".join(str(exc).split())
    return str(exc)


def check_request(path: str | Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a DGDR file as admission sees it, for `dynamo.deploy validate`: the
    request's own checks, then what its planner would refuse; notes (a v1alpha1 reading) are warnings."""
    notes: list[str] = []
    try:
        req = load_request(path, notes)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        lines = str(exc).splitlines()  # "invalid DynamoGraphDeploymentRequest:" then one problem a line
        return [line.strip() for line in lines[1:]] or lines, notes
    return planner_problems(req), notes


def model_config(model_dir: str | None) -> dict[str, Any]:
    cfg = Path(model_dir) / "config.json" if model_dir else None
    return json.loads(cfg.read_text()) if cfg and cfg.is_file() else {}


def max_context(req: dgdr.Request, model_dir: str | None) -> int:
    """Dynamo's rule: max_position_embeddings, else 2 x ISL, else 8192."""
    value = model_config(model_dir).get("max_position_embeddings")
    return int(value) if value else (2 * req.spec.workload.isl or 8192)


async def thorough(req: dgdr.Request, opts: Options, status: Status) -> tuple[Choice, Profile]:
    out = opts.output_dir
    measured = []
    for tp in opts.sweep.tp_sizes:
        status.set(profiling="Initializing", message=f"deploying candidate TP{tp} (prefill + decode)")
        measured.append(await measure_candidate(req, tp, opts.sweep, out / "candidates" / f"tp{tp}",
                                                lambda ph, tp=tp: status.set(profiling=ph,
                                                                             message=f"candidate TP{tp}")))
    status.set(profiling="SelectingConfig", message=f"{len(measured)} candidate(s) measured")
    choice, pm, dm = select(req, measured)
    status.set(profiling="BuildingCurves", message="writing interpolation data and plots")
    profile = Profile(pm.profile.prefill, dm.profile.decode)
    write_curves(req, choice, profile, out, (f"prefill TP{pm.tp}", f"decode TP{dm.tp}"))
    return choice, profile


def write_curves(req: dgdr.Request, choice: Choice, profile: Profile, out: Path, titles: tuple[str, str]) -> None:
    """The interpolation files (and their JSON twins for the ConfigMap), then their plots."""
    write_profile(out, profile)
    ttft_t, itl_t = req.spec.sla.targets if req.spec.sla.e2eLatency is None else (None, None)
    try:
        plot_prefill(profile.prefill, out / "selected_prefill_interpolation" / "prefill_ttft_isl.png", ttft_t,
                     f"{req.spec.model}: {titles[0]}")
        plot_decode(profile.decode, out / "selected_decode_interpolation" / "decode_itl_load.png", itl_t,
                    f"{req.spec.model}: {titles[1]}")
    except RuntimeError as exc:  # the curves stand without their pictures
        log.warning("NO PLOTS: %s", exc)
        choice.notes.append(f"no plots: {exc}")


async def rapid_search(req: dgdr.Request, opts: Options, status: Status) -> tuple[Choice, Profile | None]:
    """AIConfigurator's pick, and its estimated curves where the DGD reads profile data (a planner that seeds
    from it, mockers that replay it: their TTFT/ITL then follow the estimates the SLA was judged by)."""
    choice = await asyncio.to_thread(rapid, req, opts.output_dir / "rapid", opts.model_dir)
    if not wants_curves(req, choice.mode):
        return choice, None
    if choice.source != "aiconfigurator":
        choice.notes.append("no profile data: AIConfigurator does not cover this model/SKU; "
                            + without_curves(req, choice.mode))
        return choice, None
    status.set(profiling="BuildingCurves", message="estimating the profile data with AIConfigurator")
    profile = await asyncio.to_thread(rapid_profile, req, choice, opts.sweep)
    if profile is not None:
        engines = {w.role: w.tp for w in choice.workers}
        p_tp, d_tp = engines.get("prefill", engines.get("agg")), engines.get("decode", engines.get("agg"))
        write_curves(req, choice, profile, opts.output_dir,
                     (f"prefill TP{p_tp} (AIConfigurator estimate)", f"decode TP{d_tp} (AIConfigurator estimate)"))
    return choice, profile


def write_final(req: dgdr.Request, choice: Choice, profile: Profile | None, out: Path) -> Path:
    """`final_config.yaml`: [ConfigMaps..., the v1beta1 DGD], checked as `dynamo.deploy validate` checks it."""
    profile_cm = profile_configmap(req, out) if profile is not None and (req.spec.mocker or req.spec.planner) else None
    docs = final_documents(req, choice, profile_cm)
    path = out / FINAL
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    from dynamo.deploy.validate import validate_file

    report = validate_file(path)
    if report.errors:
        raise RuntimeError("generated DGD does not validate:\n" + "\n".join(report.lines()))
    return path


def summary(choice: Choice) -> str:
    workers = ", ".join(f"{w.role} TP{w.tp}x{w.replicas}" for w in choice.workers)
    figures = ", ".join(f"{k}={v:.4g}" for k, v in choice.expected.items())
    sla = {True: "SLA met", False: "SLA NOT MET", None: "SLA UNVERIFIED"}[choice.sla_met]
    return f"{choice.mode} ({choice.source}): {workers}; {choice.total_gpus} GPU(s); {sla}; {figures}"


def model_source(req: dgdr.Request, model_dir: str | None) -> str:
    """What the profile was made with: the local model given (`--model`, made absolute), else the request's."""
    if model_dir and Path(model_dir).exists():
        return str(Path(model_dir).resolve())
    return model_dir or req.spec.model


def reusable(prev: dict[str, Any] | None, source: str, final: Path) -> bool:
    """A finished profile of the same spec (the claim checked that) made with the same model: a profile made
    on a local stand-in (`run DGDR.yaml --model DIR`) is not the cluster's (`render DGDR.yaml`). A failed
    deployment leaves its profile reusable. A DGD written before this profiler wrote v1beta1 is not."""
    done = prev is not None and (prev.get("phase") in ("Ready", "Deploying", "Deployed")
                                 or (prev.get("phase") == "Failed" and prev.get("profilingPhase") == "Done"))
    return done and prev.get("modelSource") == source and written_as_now(final)


def written_as_now(final: Path) -> bool:
    """Whether `final` holds a DGD in the version this profiler writes (an earlier one wrote v1alpha1, with the
    planner's config inline: profiled again, so a reused result looks as a new one does)."""
    try:
        docs = list(yaml.safe_load_all(final.read_text()))
    except (OSError, yaml.YAMLError):
        return False
    return any(isinstance(d, dict) and d.get("kind") == "DynamoGraphDeployment" and d.get("apiVersion") == DGD_API
               for d in docs)


def context_note(req: dgdr.Request, model_dir: str | None) -> str | None:
    """A stand-in model whose context is under the workload's ISL+OSL: the profile cannot cover the workload."""
    ctx = model_config(model_dir).get("max_position_embeddings")
    need = req.spec.workload.isl + req.spec.workload.osl
    if not ctx or int(ctx) >= need:
        return None
    return (f"the local model {model_dir} has a context of {int(ctx)} tokens, under the workload's ISL+OSL ({need}): "
            f"the profile is limited to it and describes that model, not {req.spec.model}; profile without --model "
            "(or with the real model) for the deployment the request is for")


async def profile_request(req: dgdr.Request, opts: Options, status: Status,
                          prev: dict[str, Any] | None) -> tuple[Path, Choice | None]:
    """`prev`: the output dir's record, as `status.claim()` returned it (the claim is made before this runs)."""
    final = opts.output_dir / FINAL
    source = model_source(req, opts.model_dir)
    if reusable(prev, source, final):
        status.data.update({k: prev[k] for k in ("choice", "slaMet", "dgdName", "notes", "outputs") if k in prev})
        status.set("Ready", "Done", message=f"reusing {final} (same spec and model, already profiled)",
                   modelSource=source, error=None)
        return final, None
    if prev and prev.get("modelSource") not in (None, source) and final.is_file():
        log.warning("%s was profiled with %s; profiling again with %s", final, prev["modelSource"], source)
    elif prev and final.is_file() and not written_as_now(final):
        log.warning("%s is an earlier profiler's (its DGD is not %s); profiling again", final, DGD_API)
    status.set("Profiling", "Initializing", message=f"{req.spec.searchStrategy} search for {req.spec.model}",
               modelSource=source)
    small = context_note(req, opts.model_dir)
    if small:
        log.warning("%s", small)
    opts.sweep.model_dir = opts.model_dir
    opts.sweep.max_context = min(opts.sweep.max_context, max_context(req, opts.model_dir))
    opts.sweep.vocab_size = model_config(opts.model_dir).get("vocab_size")
    if req.spec.searchStrategy == "rapid":
        choice, profile = await rapid_search(req, opts, status)
    else:
        choice, profile = await thorough(req, opts, status)
    choice.notes += [small] if small else []
    for note in choice.notes:
        log.warning("%s", note) if choice.sla_met is not True else log.info("%s", note)
    status.set(profiling="GeneratingDGD", message=summary(choice))
    path = write_final(req, choice, profile, opts.output_dir)
    status.set("Ready", "Done", message=summary(choice), slaMet=choice.sla_met, notes=choice.notes,
               dgdName=dgd_name(req), outputs={"final_config": FINAL},
               choice={"mode": choice.mode, "source": choice.source, "expected": choice.expected,
                       "workers": [w.__dict__ for w in choice.workers]})
    return path, choice


async def until_signal(work: Awaitable[T]) -> tuple[T | None, int | None]:
    """(`work`'s result, None), or (None, the signal) when SIGINT or SIGTERM cancelled it. Cancelling
    unwinds every `async with` deployment in it (each stops its `dynamo.deploy run`), where the default
    SIGTERM would end this process at once and leave a candidate running. Only the first signal cancels:
    a second must not interrupt the stopping."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def cancel(signum: int) -> None:
        if not received:
            received.append(signum)
            log.warning("%s: stopping (the candidate deployment, if any, is being torn down)",
                        signal.Signals(signum).name)
            task.cancel()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(signum, cancel, signum)
            installed.append(signum)
    try:
        return await task, None
    except asyncio.CancelledError:
        if received:
            return None, received[0]
        raise
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def planner_problems(req: dgdr.Request) -> list[str]:
    """What the planner of the generated DGD would refuse at start, known before any profiling
    (Dynamo passes `features.planner` through unread: its planner crash-loops after the deploy), each
    where the request says it (`spec.features.planner`, or a v1alpha1 planner key as written)."""
    if not req.spec.planner:
        return []
    from dynamo.deploy.parsers import check_args

    config = planner_config(req, dgd_backend(req), None)
    errors = check_args("dynamo.planner", ["--config", json.dumps(config)]).errors
    return [planner_problem(e.split("refuses this config at start: ", 1)[-1], req.metadata.annotations)
            for e in errors]


async def run(req: dgdr.Request, opts: Options) -> int:
    """Profile (or reuse), then deploy under `dynamo.deploy run DGDR.yaml` when autoApply (never for
    `python -m dynamo.profiler`). Exit codes: 0 ok, 1 failed, 2 refused, 3 SLA not met (only with
    `refuse_unmet_sla`; by default, as in Dynamo, the best configuration found goes ahead, said in the status),
    128 + N stopped by signal N (SIGINT, SIGTERM) while profiling, any candidate deployment torn down first."""
    problems = planner_problems(req)
    if problems:  # refused at admission, as a webhook would: nothing profiled, no status written
        log.error("invalid %s: %s", dgdr.KIND, "; ".join(problems))
        return 2
    status = Status(opts.output_dir, req.metadata.name, dgdr.spec_digest(req))
    # SpecChanged, raised to the CLI (exit 2), is refused as a webhook refuses it: the frozen profile and its
    # status stay as they are
    prev = status.claim()
    if opts.dry_run:
        status.set("Pending", message=f"dry run: valid request; would run {req.spec.searchStrategy} profiling")
        return 0
    try:
        outcome, signum = await until_signal(profile_request(req, opts, status, prev))
    except Exception as exc:
        log.debug("profiling failed", exc_info=True)
        status.fail(str(exc) or type(exc).__name__)  # the reason, not the class (a bare one: all there is)
        return 1
    if signum is not None:  # the candidate deployment (if any) was stopped on the way out
        status.fail(f"stopped by {signal.Signals(signum).name} while profiling")
        return 128 + signum
    final, choice = outcome
    met = status.data.get("slaMet")
    if met is False and opts.refuse_unmet_sla:
        status.set(message=f"SLA cannot be met; not deploying {final} (see notes; --refuse-unmet-sla is set)")
        return 3
    if met is False:  # as Dynamo: said (status, notes, log) and deployed, the best that was found
        log.warning("the SLA cannot be met (notes in the status); %s is the best configuration found and is used "
                    "as is (--refuse-unmet-sla stops here instead)", final)
    if opts.caller == "run" and req.spec.autoApply:
        try:
            return await deploy(req, final, opts, status)
        except Exception as exc:  # deploy records what it expects; anything else is still a failed request
            log.debug("deploying failed", exc_info=True)
            status.fail(f"deploying {final} failed: {str(exc) or type(exc).__name__}")
            return 1
    return _not_applied(req, final, opts, status)


def _not_applied(req: dgdr.Request, final: Path, opts: Options, status: Status) -> int:
    """Nothing deployed: the status names the command that runs `final`, with every `run` flag that went
    unused (`run DGDR.yaml` with autoApply false: its ports too), and a warning names those flags."""
    unused = unapplied(opts) if opts.caller == "run" else opts.run_flags
    if unused:
        log.warning("autoApply is false: nothing deployed, so %s did not apply", shlex.join(unused))
    status.set(message=not_deployed(req, final, unused, opts.caller))
    return 0


def is_request(path: str | Path) -> bool:
    """Whether `path` holds a DynamoGraphDeploymentRequest (for `dynamo.deploy run|render`)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return any(isinstance(d, dict) and d.get("kind") == dgdr.KIND for d in yaml.safe_load_all(fh))
    except (OSError, yaml.YAMLError):
        return False


def deploy_main(cmd: str, args: Any) -> int:
    """`dynamo.deploy run|render DGDR.yaml`: profile (or reuse the result in `profiling_results/<name>`), then
    run it when autoApply, with every flag `run` was given (`apply.py`), or render its DGD."""
    from dynamo.runtime.process import configure_logging

    configure_logging()
    logging.getLogger("dynamo.profiler").setLevel(logging.INFO)
    try:
        req = load_request(args.file)
        flags = run_flags(args) if cmd == "run" else []
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"error: {unreadable(args.file, exc)}", file=sys.stderr)
        return 2
    from dynamo.profiler.__main__ import ProfilerArgs, options, with_request_settings
    from dynamo.runtime.config import parse_config

    settings = parse_config(ProfilerArgs, [], prog="dynamo.deploy")  # sweep settings from DYN_PROFILER_*
    opts = options(with_request_settings(settings, req))
    opts.output_dir = Path("profiling_results") / req.metadata.name
    opts.model_dir = getattr(args, "model", None)
    opts.caller = cmd
    opts.frontend_port = getattr(args, "frontend_port", 8000)
    opts.control_port = getattr(args, "control_port", 0) or 0
    opts.run_flags = flags
    try:
        rc = asyncio.run(run(req, opts))
    except SpecChanged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rc != 0 or cmd != "render":
        return rc
    from dynamo.deploy.render_file import main as render_main

    args.file = str(opts.output_dir / FINAL)
    return render_main(args)
