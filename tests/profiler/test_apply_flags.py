"""`python -m dynamo.deploy run DGDR.yaml` hands every `run` flag to the deployment of the profiled DGD (the
audit's run dropped all but --model and --frontend-port: `scale` could not find the control port, a planner
got no Prometheus, --set was ignored); `python -m dynamo.profiler` deploys nothing and says how to; a profile
is reused only for the same spec and model, and a stand-in model too short for the workload is said."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from dynamo.deploy.__main__ import build_parser
from dynamo.profiler import dgdr
from dynamo.profiler.apply import OWN, _run_parser, not_deployed, run_flags
from dynamo.profiler.local import LocalDeployment
from dynamo.profiler.pipeline import context_note, model_source, reusable

EVERY_FLAG = ["--set", "Worker.replicas=2", "--set", "Frontend.replicas=1", "--append-args", "Worker=--x 1",
              "--volume", "models=/data", "--namespace", "team", "--prometheus-endpoint", "http://prom:9090",
              "--hpa-sync-period", "5", "--log-dir", "/tmp/logs", "--grace", "4", "--no-status"]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "dgdr.yaml", *argv])


def test_every_run_flag_passes_through_in_order_of_runs_parser():
    args = parse("--model", "/m", "--frontend-port", "9000", "--control-port", "9001", *EVERY_FLAG)
    assert run_flags(args) == ["--set", "Worker.replicas=2", "--set", "Frontend.replicas=1", "--append-args",
                               "Worker=--x 1", "--volume", "models=/data", "--namespace", "team",
                               "--prometheus-endpoint", "http://prom:9090", "--hpa-sync-period", "5.0",
                               "--log-dir", "/tmp/logs", "--grace", "4.0", "--no-status"]
    assert run_flags(parse()) == []  # defaults stay the inner run's own


def _some_value(action: argparse.Action) -> list[str]:
    """A command line setting `action` to something other than its default."""
    flag = max(action.option_strings, key=len)
    if isinstance(action, argparse._StoreTrueAction):
        return [flag]
    if action.choices:
        return [flag, next(str(c) for c in action.choices if c != action.default)]
    return [flag, "7" if action.type in (int, float) or _takes_numbers(action) else "Svc=x"]


def _takes_numbers(action: argparse.Action) -> bool:
    """A flag typed by a checking parser (`run`'s positive / non-negative numbers) that takes "7"."""
    if action.type is None or action.type is str:
        return False
    try:
        action.type("7")
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return False
    return True


def test_no_flag_of_run_is_left_behind():
    """Each of `run`'s flags, those it gains later too, either reaches the deployment or is one the profiler
    sets from the same value (ports, --model)."""
    for action in _run_parser()._actions:
        if action.option_strings and action.dest not in OWN:
            argv = _some_value(action)
            want = [argv[0], str(action.type(argv[1]))] if len(argv) > 1 and action.type else argv  # 7 -> 7.0
            assert run_flags(parse(*argv)) == want, argv


def test_the_deployment_gets_the_ports_and_flags_the_user_chose(tmp_path):
    dep = LocalDeployment({"spec": {"services": {}}}, tmp_path, "/m", "m", run_flags=run_flags(parse(*EVERY_FLAG)),
                          control_port=9001)
    cmd = dep.command(tmp_path / "dgd.yaml")
    assert cmd[cmd.index("--control-port") + 1] == "9001" and dep.control_url == "http://127.0.0.1:9001"
    assert cmd[cmd.index("--grace") + 1] == "4.0" and dep.stop_timeout == 4.0 + 25.0
    assert "--no-status" in cmd and cmd[cmd.index("--log-dir") + 1] == "/tmp/logs"
    candidate = LocalDeployment({"spec": {"services": {}}}, tmp_path, None, "m").command(tmp_path / "c.yaml")
    assert candidate[candidate.index("--log-dir") + 1] == str(tmp_path / "logs") and "--no-status" in candidate


def request(**spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r"}, "spec": {"model": "Qwen/Qwen3-0.6B", **spec}})


def test_the_profiler_never_deploys_and_says_how_to():
    final = Path("out/final_config.yaml")
    said = not_deployed(request(), final, [], "profiler")  # autoApply defaults to true
    assert "python -m dynamo.profiler writes the DGD, it deploys nothing" in said
    assert "`python -m dynamo.deploy run out/final_config.yaml` runs it here" in said
    assert "kubectl apply -f out/final_config.yaml" in said
    off = not_deployed(request(autoApply=False), final, ["--set", "W.replicas=2", "--append-args", "W=--a b"], "run")
    assert "autoApply is false" in off and "run out/final_config.yaml --set W.replicas=2 --append-args 'W=--a b'" in off
    rendered = not_deployed(request(), final, [], "render")
    assert rendered.startswith("DGD ready: out/final_config.yaml (rendered as Kubernetes objects;")


def test_a_profile_is_reused_for_the_same_model_only(tmp_path):
    final = tmp_path / "final_config.yaml"
    dgd = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "metadata": {"name": "d"}}
    final.write_text(yaml.safe_dump_all([{"kind": "ConfigMap"}, dgd]))
    local = str(tmp_path.resolve())
    assert model_source(request(), str(tmp_path)) == local and model_source(request(), None) == "Qwen/Qwen3-0.6B"
    done = {"phase": "Ready", "profilingPhase": "Done", "modelSource": local}
    assert reusable(done, local, final)
    assert not reusable(done, "Qwen/Qwen3-0.6B", final)  # profiled on the stand-in: not the cluster's
    assert not reusable({**done, "modelSource": None}, local, final)  # a status from before: profile again
    assert reusable({**done, "phase": "Failed"}, local, final)  # the deployment failed, the profile stands
    assert not reusable({**done, "phase": "Failed", "profilingPhase": "SweepingDecode"}, local, final)
    assert not reusable(done, local, tmp_path / "gone.yaml")
    final.write_text(yaml.safe_dump({**dgd, "apiVersion": "nvidia.com/v1alpha1"}))  # an earlier profiler's output
    assert not reusable(done, local, final)


def test_a_stand_in_model_shorter_than_the_workload_is_said(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    note = context_note(request(workload={"isl": 3000, "osl": 150}), str(tmp_path))
    assert note and "context of 2048 tokens, under the workload's ISL+OSL (3150)" in note
    assert context_note(request(workload={"isl": 1500, "osl": 500}), str(tmp_path)) is None
    assert context_note(request(), None) is None

