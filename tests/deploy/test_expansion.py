"""Kubernetes `$(VAR)` expansion: the kubelet's rules, `run` applying them with each replica's env,
`validate` checking flags after expansion, `render` leaving the references to Kubernetes."""

from __future__ import annotations

import pytest

from dynamo.deploy.expansion import expand, expand_env, unresolved
from dynamo.deploy.model import EnvVar
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.render import render
from tests.deploy.manifests import check, load, mocker_graph


@pytest.mark.parametrize("text, expected", [
    ("$(A)", "1"), ("x-$(A)-$(B)", "x-1-two"), ("$(MISSING)", "$(MISSING)"), ("$$(A)", "$(A)"),
    ("$$$(A)", "$1"), ("$$", "$"), ("$A $HOME ${A}", "$A $HOME ${A}"), ("$(A", "$(A"), ("a$", "a$"),
    ("$()", "$()"), ("$(cat /x)", "$(cat /x)"),
])
def test_expand_follows_the_kubelet(text, expected):
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_an_env_value_sees_only_the_entries_before_it():
    entries = [EnvVar("LATE_REF", "$(DIR)/x"), EnvVar("DIR", "/m"), EnvVar("PATHS", "$(DIR):$(BASE)"),
               EnvVar("SECRET", valueFrom={"secretKeyRef": {"name": "s", "key": "k"}}), EnvVar("USE", "$(SECRET)")]
    env = expand_env(entries, {"BASE": "/b"})
    assert env == {"LATE_REF": "$(DIR)/x", "DIR": "/m", "PATHS": "/m:/b", "USE": "$(SECRET)"}
    assert unresolved("a $(X) $$ $(Y)") == ["$(X)", "$(Y)"]


WORKER_REFS = {
    "envs": [{"name": "MODEL_DIR", "value": "/opt/models/tiny-llama"}, {"name": "SERVED", "value": "tiny-$(GLOBAL)"},
             {"name": "PORT_COPY", "value": "$(DYN_SYSTEM_PORT)"}],
    "main": {"args": ["--model-path", "$(MODEL_DIR)", "--model-name", "$(SERVED)", "--speedup-ratio", "$(SPEED)",
                      "--block-size", "$$(KEEP)"]},
}


def test_run_expands_references_in_args_and_env_with_the_replicas_values(tmp_path):
    graph = load(mocker_graph(worker=WORKER_REFS, graph_envs=[{"name": "GLOBAL", "value": "g"},
                                                              {"name": "SPEED", "value": "5"}]), tmp_path)
    plans = build_plans(graph, RunOptions(state_dir=str(tmp_path / "s"), environ={"PATH": "/usr/bin"}), {}, devices=[])
    launch = plans["MockerWorker"].launch(0)
    args = launch.argv[launch.argv.index("--model-path"):]
    assert args == ["--model-path", "/opt/models/tiny-llama", "--model-name", "tiny-g", "--speedup-ratio", "5",
                    "--block-size", "$(KEEP)"]
    assert launch.env["SERVED"] == "tiny-g"
    assert launch.env["PORT_COPY"] == launch.env["DYN_SYSTEM_PORT"] == str(launch.system_port)  # the local port


def test_run_expands_a_reference_inside_a_shell_script(tmp_path):
    worker = {"envs": [{"name": "MODEL_DIR", "value": "/opt/models/tiny-llama"},
                       {"name": "MY_ARGS", "value": "--speedup-ratio 5 --model-path $(MODEL_DIR)"}],
              "main": {"command": ["/bin/sh", "-c"], "args": ["exec python3 -m dynamo.mocker $(MY_ARGS) --model-name t"]}}
    graph = load(mocker_graph(worker=worker), tmp_path)
    plans = build_plans(graph, RunOptions(state_dir=str(tmp_path / "s"), environ={"PATH": "/usr/bin"}), {}, devices=[])
    script = plans["MockerWorker"].launch(0).argv[-1]
    assert script.endswith("-m dynamo.mocker --speedup-ratio 5 --model-path /opt/models/tiny-llama --model-name t")


def test_validate_checks_flags_after_expansion(tmp_path):
    worker = {"envs": [{"name": "SPEED", "value": "fast"}], "main": {"args": [
        "--model-path", "/m", "--speedup-ratio", "$(SPEED)"]}}
    errors = check(mocker_graph(worker=worker), tmp_path).errors
    assert any("service MockerWorker" in e and "--speedup-ratio" in e and "'fast'" in e for e in errors), errors
    worker["envs"] = [{"name": "MY_ARGS", "value": "--speedup-ration 5"}]
    worker["main"] = {"command": ["/bin/sh", "-c"], "args": ["python3 -m dynamo.mocker --model-path /m $(MY_ARGS)"]}
    errors = check(mocker_graph(worker=worker), tmp_path).errors
    assert any("unknown flag --speedup-ration" in e for e in errors), errors


def test_validate_passes_known_references_and_warns_of_undefined_ones(tmp_path):
    report = check(mocker_graph(worker=WORKER_REFS, graph_envs=[{"name": "GLOBAL", "value": "g"},
                                                                {"name": "SPEED", "value": "5"}]), tmp_path)
    assert report.ok and not any("not defined" in w for w in report.warnings), report.lines()
    report = check(mocker_graph(worker=WORKER_REFS), tmp_path)  # no GLOBAL, no SPEED
    assert report.ok, report.errors
    assert any("$(SPEED) is not defined in the container's env" in w for w in report.warnings), report.warnings


def test_render_leaves_references_to_kubernetes(tmp_path):
    graph = load(mocker_graph(worker=WORKER_REFS, graph_envs=[{"name": "GLOBAL", "value": "g"},
                                                              {"name": "REF", "value": "$(GLOBAL)-x"}]), tmp_path)
    objects = render(graph)
    (worker,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "compat-mockerworker"]
    main = worker["spec"]["template"]["spec"]["containers"][0]
    assert main["args"][:4] == ["--model-path", "$(MODEL_DIR)", "--model-name", "$(SERVED)"]
    assert "$$(KEEP)" in main["args"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["SERVED"] == "tiny-$(GLOBAL)"
    # A ConfigMap's values are never expanded: a graph-wide value with a reference is an env entry as well.
    assert env["REF"] == "$(GLOBAL)-x"
