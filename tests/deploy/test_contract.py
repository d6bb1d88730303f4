"""The operator's contract as `run`, `render` and `validate` apply it: the default command of a frontend or
planner given only `args`, and the ports a pod serves on when the manifest moves them."""

from __future__ import annotations

import pytest

from dynamo.deploy import contract
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.render import render
from tests.deploy.manifests import check, load, mocker_graph

ARGS_ONLY = {"main": {"args": ["--http-port", "8787", "--router-mode", "kv"]}}


def plans(graph, tmp_path):
    return build_plans(graph, RunOptions(state_dir=str(tmp_path / "s"), environ={"PATH": "/usr/bin"}), {}, devices=[])


def deployment(objects, name):
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == f"compat-{name}"]
    return found


def service(objects, name):
    (found,) = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == f"compat-{name}"]
    return found


def test_a_frontend_with_args_only_runs_the_default_command_with_them(tmp_path):
    graph = load(mocker_graph(frontend=ARGS_ONLY), tmp_path)
    svc = graph.spec.services["Frontend"]
    assert contract.command_of(svc) == (["python3", "-m", "dynamo.frontend"], ARGS_ONLY["main"]["args"], True)
    argv = plans(graph, tmp_path)["Frontend"].launch(0).argv
    assert argv[1:3] == ["-m", "dynamo.frontend"] and argv[argv.index("--router-mode") + 1] == "kv"
    main = deployment(render(graph), "frontend")["spec"]["template"]["spec"]["containers"][0]
    assert main["command"] == ["python3", "-m", "dynamo.frontend"] and main["args"] == ARGS_ONLY["main"]["args"]


def test_a_planner_with_args_only_gets_its_default_command(tmp_path):
    doc = mocker_graph()
    doc["spec"]["services"]["Planner"] = {"componentType": "planner", "extraPodSpec": {"mainContainer": {
        "image": "x/y:1", "args": ["--config", '{"environment": "kubernetes", "backend": "mocker"}']}}}
    graph = load(doc, tmp_path)
    command, args, defaulted = contract.command_of(graph.spec.services["Planner"])
    assert command == ["python3", "-m", "dynamo.planner"] and args[0] == "--config" and defaulted


def test_validate_checks_a_frontends_args_against_its_parser(tmp_path):
    report = check(mocker_graph(frontend={"main": {"args": ["--http-port", "8787", "--bogus"]}}), tmp_path)
    assert any("service Frontend" in e and "unknown flag --bogus" in e for e in report.errors), report.lines()
    report = check(mocker_graph(frontend=ARGS_ONLY), tmp_path)
    assert report.ok and not any("runs no" in w for w in report.warnings), report.lines()


def test_a_worker_with_args_only_is_still_an_error(tmp_path):
    worker = {"main": {"command": None, "args": ["--model-path", "/m"]}}
    doc = mocker_graph(worker=worker)
    del doc["spec"]["services"]["MockerWorker"]["extraPodSpec"]["mainContainer"]["command"]
    assert contract.command_of(load(doc, tmp_path).spec.services["MockerWorker"])[0] is None


def ports_of(objects, name):
    dep = deployment(objects, name)
    pod = dep["spec"]["template"]
    main = pod["spec"]["containers"][0]
    probes = {k: p for k, p in main.items() if k.endswith("Probe")}
    http = {p["httpGet"]["port"] for p in probes.values() if "httpGet" in p}
    scripts = [p["exec"]["command"][-1] for p in probes.values() if "exec" in p]
    return {"container": [p["containerPort"] for p in main["ports"]], "probes": http, "scripts": scripts,
            "service": [p["port"] for p in service(objects, name)["spec"]["ports"]],
            "scrape": pod["metadata"]["annotations"]["prometheus.io/port"],
            "env": {e["name"]: e.get("value") for e in main["env"]}}


@pytest.mark.parametrize("frontend, port", [
    ({"envs": [{"name": "DYN_HTTP_PORT", "value": "9000"}]}, 9000),
    ({"main": {"args": ["--http-port", "8787"]}}, 8787),
    ({"envs": [{"name": "DYN_HTTP_PORT", "value": "9000"}], "main": {"args": ["--http-port=8787"]}}, 8787),
    ({"envs": [{"name": "P", "value": "8111"}], "main": {"command": ["python3", "-m", "dynamo.frontend"],
                                                         "args": ["--http-port", "$(P)"]}}, 8111),
    ({}, 8000),
])
def test_render_follows_the_frontends_own_http_port(tmp_path, frontend, port):
    ports = ports_of(render(load(mocker_graph(frontend=frontend), tmp_path)), "frontend")
    assert ports["container"] == [port] and ports["service"] == [port] and ports["probes"] == {port}
    assert ports["scrape"] == str(port) and all(f"127.0.0.1:{port}/" in s for s in ports["scripts"])
    assert ports["env"]["DYNAMO_PORT"] == str(port)


def test_render_follows_a_workers_system_port(tmp_path):
    worker = {"envs": [{"name": "DYN_SYSTEM_PORT", "value": "9345"}]}
    ports = ports_of(render(load(mocker_graph(worker=worker), tmp_path)), "mockerworker")
    assert ports["container"] == [9345] and ports["service"] == [9345] and ports["probes"] == {9345}
    assert ports["scrape"] == "9345" and ports["env"]["DYN_SYSTEM_PORT"] == "9345"
    graph_wide = mocker_graph(graph_envs=[{"name": "DYN_SYSTEM_PORT", "value": "9400"}])
    ports = ports_of(render(load(graph_wide, tmp_path)), "mockerworker")
    assert ports["probes"] == {9400} and ports["env"]["DYN_SYSTEM_PORT"] == "9400"


def test_run_keeps_its_local_ports_and_maps_the_manifests_ports_to_them(tmp_path):
    doc = mocker_graph(frontend={"envs": [{"name": "DYN_HTTP_PORT", "value": "9000"}]},
                       worker={"envs": [{"name": "DYN_SYSTEM_PORT", "value": "9345"}]})
    graph = load(doc, tmp_path)
    found = plans(graph, tmp_path)
    front, worker = found["Frontend"], found["MockerWorker"]
    flaunch, wlaunch = front.launch(0), worker.launch(0)
    assert flaunch.argv[flaunch.argv.index("--http-port") + 1] == "8000" == flaunch.env["DYN_HTTP_PORT"]
    assert wlaunch.env["DYN_SYSTEM_PORT"] == str(wlaunch.system_port) != "9345"
    assert wlaunch.probes["readiness"]["httpGet"]["port"] == wlaunch.system_port
    assert worker.map_probe_port(9345, wlaunch) == wlaunch.system_port  # a manifest probe on its own port
    assert front.map_probe_port(9000, flaunch) == flaunch.http_port
