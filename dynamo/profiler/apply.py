"""The profiled DGD run on this machine: what `python -m dynamo.deploy run DGDR.yaml` does once profiling
is done and the request says `autoApply` (never `python -m dynamo.profiler`, which, as Dynamo's, writes the
DGD and the status and stops; Dynamo's operator applies the DGD). Owns the boundary between the flags the
user gave `run` and the inner `dynamo.deploy run final_config.yaml`: every flag of `run` reaches it (the
ports the user chose, so `dynamo.deploy scale` and a browser find them), its output is the console's as a
plain `run`'s is, and a deployment that does not come up (or ends on its own) is a failed request in the
status, with `run`'s own error, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
from pathlib import Path
from typing import Any

import yaml

from dynamo.profiler import dgdr
from dynamo.profiler.dgd import dgd_name
from dynamo.profiler.status import Status
from dynamo.profiler.thorough import local_deployment

log = logging.getLogger("dynamo.profiler")
# Flags the profiler itself sets on the inner `run` (from the same values): everything else passes as given.
OWN = {"file", "frontend_port", "control_port", "model", "help"}


def _run_parser() -> argparse.ArgumentParser:
    from dynamo.deploy.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["run"]


def run_flags(args: argparse.Namespace) -> list[str]:
    """The flags of `dynamo.deploy run` that `args` sets to other than their defaults, as a command line
    (read from `run`'s own parser, so a flag it gains passes too). ValueError for a kind of flag that
    cannot be written back."""
    out: list[str] = []
    for action in _run_parser()._actions:
        if not action.option_strings or action.dest in OWN:
            continue
        value = getattr(args, action.dest, action.default)
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            out += [flag] if value else []
        elif isinstance(action, argparse._AppendAction):
            for item in value or []:
                out += [flag, str(item)]
        elif isinstance(action, argparse._StoreAction):
            out += [flag, str(value)] if value is not None and value != action.default else []
        elif value != action.default:
            raise ValueError(f"{flag}: cannot be passed on to the deployment of a profiled DGD")
    return out


def unapplied(opts: Any) -> list[str]:
    """The `run` flags a deployment that did not happen (autoApply false) leaves unused, as a command line
    (`opts`: the pipeline's Options): the ports the user chose (the profiler sets them on the inner `run`
    itself, so `run_flags` leaves them out), then every other flag."""
    parser, ports = _run_parser(), []
    for flag, dest in (("--frontend-port", "frontend_port"), ("--control-port", "control_port")):
        value = getattr(opts, dest)
        if value and value != parser.get_default(dest):
            ports += [flag, str(value)]
    return ports + list(opts.run_flags)


def not_deployed(req: dgdr.Request, final: Path, flags: list[str], caller: str) -> str:
    """What the status says when the DGD is written and nothing is deployed (`caller`: profiler, run or
    render), with the command that runs it."""
    command = shlex.join(["python", "-m", "dynamo.deploy", "run", str(final), *flags])
    where = f"`{command}` runs it here; `kubectl apply -f {final}` on a cluster with Dynamo's operator"
    if caller == "render":
        return f"DGD ready: {final} (rendered as Kubernetes objects; {where})"
    if caller == "profiler" and req.spec.autoApply:  # Dynamo's profiler never deploys: its operator applies it
        return (f"DGD ready: {final} (autoApply: python -m dynamo.profiler writes the DGD, it deploys nothing; "
                f"{where}; `python -m dynamo.deploy run DGDR.yaml` profiles and runs in one step)")
    return f"DGD ready: {final} (autoApply is false: not deployed; {where})"


async def deploy(req: dgdr.Request, final: Path, opts: Any, status: Status) -> int:
    """Run `final` (`opts`: the pipeline's Options) until SIGINT/SIGTERM (0; 128 + the signal when it came
    before the deployment was ready), or until `run` ends on its own (its exit code, status failed). A
    deployment that does not come up is recorded as failed with `run`'s last lines (exit 1)."""
    docs = [d for d in yaml.safe_load_all(final.read_text()) if d]
    graphs = [d for d in docs if d.get("kind") == "DynamoGraphDeployment"]
    status.set("Deploying", message=shlex.join(["dynamo.deploy", "run", str(final), *opts.run_flags]))
    opts.sweep.model_dir = opts.model_dir
    dep = local_deployment(graphs[0], opts.output_dir / "deployment", req, opts.sweep,
                           beside=[d for d in docs if d is not graphs[0]], run_flags=list(opts.run_flags),
                           control_port=opts.control_port, console=True)
    dep.port = opts.frontend_port
    stop, signals = asyncio.Event(), []
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda signum=signum: (signals.append(signum), stop.set()))
    try:
        try:
            if not await _started(dep, stop):
                status.fail(f"stopped by {signal.Signals(signals[0]).name} before the deployment was ready")
                return 128 + signals[0]
        except Exception as exc:  # `run` exiting (a model not on this machine, a port taken), the timeout
            return _failed(status, f"the deployment of {final} did not come up", str(exc))
        try:
            status.set("Deployed", message=f"serving {req.spec.model} at {dep.url}; control {dep.control_url} "
                                           "(`dynamo.deploy scale`); Ctrl-C stops", endpoint=dep.url,
                       control=dep.control_url)
            rc = await dep.serve_until(stop)
        finally:
            await dep.stop()
        if rc is None:
            _stopped(req, status, signals)
            return 0
        return _failed(status, f"dynamo.deploy run {final} exited on its own ({rc})", dep.log_tail(), rc or 1)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _started(dep: Any, stop: asyncio.Event) -> bool:
    """Whether the deployment came up before `stop` (a signal while it starts stops it at once, not after
    the engines have loaded). Its start's errors propagate."""
    starting, stopping = asyncio.ensure_future(dep.start()), asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if starting.done():
        starting.result()
        return True
    starting.cancel()  # start() stops `run` on its way out
    await asyncio.gather(starting, return_exceptions=True)
    return False


def _stopped(req: dgdr.Request, status: Status, signals: list[int]) -> None:
    """The deployment is gone: said as Dynamo's operator says it when the DGD a request deployed is deleted
    (phase Failed; the request stays, the profile with it, and the same command deploys it again)."""
    by = f" by {signal.Signals(signals[0]).name}" if signals else ""
    status.set("Failed", message=f"DGD {status.data.get('dgdName') or dgd_name(req)} was stopped{by}: the deployment "
               "is gone; `python -m dynamo.deploy run` with the same request deploys it again (the profile is reused)",
               error=None, endpoint=None, control=None)


def _failed(status: Status, what: str, detail: str, rc: int = 1) -> int:
    """Recorded (status failed; the message names the cause, the error keeps `run`'s last lines) and said
    on stderr; the profile stays, and the next run of the same request reuses it."""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    cause = next((line for line in reversed(lines) if line.lower().startswith("error")), lines[-1] if lines else "")
    status.fail(f"{what}: {cause}\n" + "\n".join(lines[-20:]))
    log.error("%s (%s); the profile is kept: the same request with the same model reuses it", what, status.path)
    return rc
