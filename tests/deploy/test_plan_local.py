"""What `run` makes of pod paths on one machine: a private /tmp per replica (command and
exec probes agree on it), HF-cache-layout model paths resolved in the local cache,
`--volume` mappings, multi-node services refused, shell redirects kept intact, and a KServe
frontend's probes reaching its HTTP routes on their local port."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dynamo.deploy.commands import parse_command
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.rollout_steps import Strategy, strategy_for
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

DEPLOY = REPO / "examples/backends"
MODEL_CACHE = DEPLOY / "mocker/deploy/v1beta1/model_cache.yaml"
SNAPSHOT = "models--Qwen--Qwen3-0.6B/snapshots/0123456789abcdef0123456789abcdef01234567"


def plans_for(path: Path, tmp_path: Path, environ: dict | None = None, **opts):
    (graph,) = validate_file(path).graphs
    options = RunOptions(state_dir=str(tmp_path / "state"), environ=environ or {"PATH": "/usr/bin"}, **opts)
    return build_plans(graph, options, {}, devices=[])


def model_arg(argv: list[str]) -> str:
    return argv[argv.index("--model-path") + 1]


def test_each_replica_has_its_own_tmp_for_command_and_probe(tmp_path):
    plans = plans_for(DEPLOY / "mocker/deploy/guide_template.yaml", tmp_path)
    worker = plans["MockerWorker"]
    first, second = worker.launch(0), worker.launch(1)
    for index, launch in enumerate((first, second)):
        tmp = tmp_path / "state" / "pods" / f"MockerWorker-{index}"
        assert tmp.is_dir() and launch.env["TMPDIR"] == str(tmp)
        assert launch.argv[:2] == ["/bin/sh", "-c"]
        assert launch.argv[2].endswith(f"2>&1 | tee {tmp}/worker.log")
        assert launch.probes["readiness"]["exec"]["command"][-1] == f'grep "Worker.*initialized" {tmp}/worker.log'
        assert launch.env["PATH"].split(":")[0] == str(Path(__import__("sys").executable).parent)
    assert plans["Frontend"].launch(0).argv[1:4] == ["-m", "dynamo.frontend", "--http-port"]
    stale = Path(first.env["TMPDIR"]) / "worker.log"
    stale.write_text("Worker x.y.z initialized (instance 1)\n")
    worker.launch(0)  # a restart: like a new container, it starts with an empty /tmp
    assert not stale.exists()


def test_hf_snapshot_path_resolves_in_the_local_cache(tmp_path, tiny_model):
    hf_home = tmp_path / "hf"
    snapshot = hf_home / "hub" / SNAPSHOT
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(tiny_model)
    plans = plans_for(MODEL_CACHE, tmp_path, {"HF_HOME": str(hf_home), "PATH": "/usr/bin"})
    launch = plans["MockerWorker"].launch(0)
    assert model_arg(launch.argv) == str(snapshot)
    assert launch.argv[launch.argv.index("--model-name") + 1] == "Qwen/Qwen3-0.6B"
    assert launch.env["HF_HOME"] == str(hf_home)  # the manifest's /opt/model-cache does not exist here


def test_missing_revision_falls_back_to_cached_main_and_absence_says_how_to_fetch(tmp_path, tiny_model):
    repo = tmp_path / "hub" / "models--Qwen--Qwen3-0.6B"
    (repo / "snapshots").mkdir(parents=True)
    (repo / "snapshots" / "feedbeef").symlink_to(tiny_model)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("feedbeef\n")
    plans = plans_for(MODEL_CACHE, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "hub")})
    assert model_arg(plans["MockerWorker"].launch(0).argv) == str(repo / "snapshots" / "feedbeef")
    with pytest.raises(ValueError) as err:
        plans_for(MODEL_CACHE, tmp_path, {"HF_HUB_CACHE": str(tmp_path / "empty"), "HOME": str(tmp_path)})
    assert "huggingface-cli download Qwen/Qwen3-0.6B --revision 0123456789abcdef" in str(err.value)


def test_volume_maps_a_pvc_mount_point_to_a_local_directory(tmp_path, tiny_model):
    cache = tmp_path / "pvc"
    (cache / "hub" / SNAPSHOT).parent.mkdir(parents=True)
    (cache / "hub" / SNAPSHOT).symlink_to(tiny_model)
    plans = plans_for(MODEL_CACHE, tmp_path, {"HOME": str(tmp_path)}, volumes={"model-cache": str(cache)})
    launch = plans["MockerWorker"].launch(0)
    assert model_arg(launch.argv) == str(cache / "hub" / SNAPSHOT)
    assert launch.env["HF_HOME"] == str(cache)
    with pytest.raises(ValueError, match="no service mounts a volume named 'nope'"):
        plans_for(MODEL_CACHE, tmp_path, volumes={"nope": str(cache)})


def test_multinode_service_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError) as err:
        plans_for(DEPLOY / "vllm/deploy/v1beta1/disagg_multinode.yaml", tmp_path)
    message = str(err.value)
    assert "service decode spans 2 nodes per replica" in message
    assert "dynamo.vllm cannot span processes on this machine" in message and "render" in message


def test_v1alpha1_multinode_is_refused_too(tmp_path):
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/agg.yaml").read_text())
    doc["spec"]["services"]["MockerWorker"]["multinode"] = {"nodeCount": 2}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="MockerWorker spans 2 nodes"):
        plans_for(path, tmp_path)


@pytest.mark.parametrize("script", [
    "python -m dynamo.mocker --model-path /m --speedup-ratio 10 2>&1 | tee /tmp/worker.log",
    "exec python3 -m dynamo.frontend --http-port 8000 >/tmp/out 2>/dev/null",
])
def test_shell_script_round_trips_with_redirects_attached(script):
    rendered = parse_command(["/bin/sh", "-c"], [script]).render()[2]
    assert rendered.replace(" ", "") == script.replace(" ", "")
    assert "2>" in rendered and " 2 >" not in rendered  # the fd stays on its redirect


def test_private_tmp_rewrites_pod_paths_only():
    from dynamo.deploy.local import private_tmp

    assert private_tmp("tee /tmp/worker.log", "/P") == "tee /P/worker.log"
    assert private_tmp('{"endpoint":"ipc:///tmp/kv"}', "/P") == '{"endpoint":"ipc:///P/kv"}'
    assert private_tmp("cd /tmp && ls /data/tmp/x http://h/tmp/y", "/P") == "cd /P && ls /data/tmp/x http://h/tmp/y"


@pytest.mark.parametrize("args, port", [(["--kserve-grpc-server"], 8788),
                                        (["--kserve-grpc-server", "--grpc-metrics-port", "9300"], "9300")])
def test_a_kserve_frontends_own_probe_reaches_its_local_http_routes(tmp_path, args, port):
    """`run` moves a KServe frontend's HTTP routes (Kubernetes' --grpc-metrics-port) to a free local port: a
    manifest probe naming the Kubernetes port reaches them there, not a port of that number on this machine."""
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/agg.yaml").read_text())
    main = doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]
    main["args"] += args
    main["readinessProbe"] = {"httpGet": {"path": "/health", "port": port}}
    path = tmp_path / "kserve.yaml"
    path.write_text(yaml.safe_dump(doc))
    frontend = plans_for(path, tmp_path)["Frontend"]
    launch = frontend.launch(0)
    routes = launch.argv[launch.argv.index("--grpc-metrics-port") + 1]
    assert launch.http_port == int(routes) != int(port)
    probe_port = launch.probes["readiness"]["httpGet"]["port"]
    assert frontend.map_probe_port(probe_port, launch) == launch.http_port
    assert frontend.map_probe_port(8000, launch) == launch.http_port  # as for any frontend


def test_a_volume_mapped_model_keeps_the_served_name_it_has_in_the_pod(tmp_path, tiny_model):
    """`--volume` moves the worker's model path to a local directory; the mocker serves a model by its path
    unless `--model-name` says otherwise, so the pod's path is kept as the served name."""
    doc = yaml.safe_load(MODEL_CACHE.read_text())
    main = doc["spec"]["components"][1]["podTemplate"]["spec"]["containers"][0]
    del main["args"][2:4]  # no --model-name: the pod serves the model under its path
    path = tmp_path / "no-name.yaml"
    path.write_text(yaml.safe_dump(doc))
    cache = tmp_path / "pvc"
    (cache / "hub" / SNAPSHOT).parent.mkdir(parents=True)
    (cache / "hub" / SNAPSHOT).symlink_to(tiny_model)
    argv = plans_for(path, tmp_path, {"HOME": str(tmp_path)}, volumes={"model-cache": str(cache)})["MockerWorker"] \
        .launch(0).argv
    assert model_arg(argv) == str(cache / "hub" / SNAPSHOT)
    assert argv[argv.index("--model-name") + 1] == f"/opt/model-cache/hub/{SNAPSHOT}"


def test_a_second_frontend_gets_a_port_of_its_own(tmp_path):
    """--frontend-port is the graph's first frontend's; a second frontend service (its own pod and Service in
    a cluster) listens on another port here rather than fail to bind the same one."""
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/agg.yaml").read_text())
    doc["spec"]["services"]["AdminFrontend"] = doc["spec"]["services"]["Frontend"]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))  # the manifest's order: Frontend comes first
    plans = plans_for(path, tmp_path, frontend_port=28123)
    first, second = plans["Frontend"].launch(0), plans["AdminFrontend"].launch(0)
    assert first.shared_port == 28123 and second.shared_port not in (None, 28123)
    assert second.argv[second.argv.index("--http-port") + 1] == str(second.shared_port)
    assert second.env["DYNAMO_PORT"] == str(second.shared_port)
    # each replica also has a port of its own (its probes, its metrics), whatever its number
    assert len({first.http_port, second.http_port, 28123, second.shared_port}) == 4
    assert plans["Frontend"].launch(1).shared_port == 28123


def test_a_frontend_run_through_a_shell_or_kserve_binds_its_port_itself(tmp_path):
    """Only `python -m dynamo.frontend` run directly inherits its service's socket: LISTEN_PID names the pid `run`
    starts, which a shell's child is not; a KServe frontend's port is its gRPC server's, which binds it itself."""
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/agg.yaml").read_text())
    main = doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]
    main.update(command=["sh", "-c", "python3 -m dynamo.frontend 2>&1 | tee /tmp/frontend.log"], args=[])
    path = tmp_path / "shell.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    plan = plans_for(path, tmp_path, frontend_port=28124)["Frontend"]
    assert not plan.handoff and plan.launch(0).shared_port is None and plan.launch(0).http_port == 28124
    # such a frontend cannot have a second copy beside the first: recreated, as is one replacing it
    handoff = plans_for(DEPLOY / "mocker/deploy/agg.yaml", tmp_path, frontend_port=28124)["Frontend"]
    assert handoff.handoff
    assert strategy_for(handoff, 1) == Strategy("RollingUpdate", 1, 0)
    assert strategy_for(plan, 1).kind == strategy_for(handoff, 1, previous=plan).kind == "Recreate"


def test_the_shared_socket_listens_where_the_frontend_would_from_its_final_argv_and_env(tmp_path):
    """The socket `run` binds for a frontend is the one the frontend would bind, read as it reads its config
    (a flag beats DYN_HTTP_HOST, which beats 0.0.0.0) from what it is really started with: --append-args and this
    shell's env included. `run`'s own LISTEN_* variables are not a replica's."""
    agg = DEPLOY / "mocker/deploy/agg.yaml"
    shell = {"PATH": "/usr/bin", "DYN_HTTP_HOST": "127.0.0.1", "LISTEN_FDS": "2", "LISTEN_PID": "1"}
    launch = plans_for(agg, tmp_path, environ=shell, frontend_port=28125)["Frontend"].launch(0)
    assert (launch.listen_host, launch.shared_port) == ("127.0.0.1", 28125)
    assert not {"LISTEN_FDS", "LISTEN_PID"} & set(launch.env)
    appended = plans_for(agg, tmp_path, environ=shell, frontend_port=28125,
                         append_args={"Frontend": ["--http-host", "127.0.0.2"]})["Frontend"].launch(0)
    assert (appended.listen_host, appended.shared_port) == ("127.0.0.2", 28125)
    assert plans_for(agg, tmp_path, frontend_port=28125)["Frontend"].launch(0).listen_host == "0.0.0.0"
    # a KServe frontend only by --append-args binds its port itself: no socket for it
    kserve = plans_for(agg, tmp_path, frontend_port=28125, append_args={"Frontend": ["--kserve-grpc-server"]})
    assert not kserve["Frontend"].handoff and kserve["Frontend"].launch(0).shared_port is None


def test_an_apply_that_moves_the_frontends_socket_recreates_it(tmp_path):
    """The old replicas' socket (0.0.0.0:port) and the new one's (127.0.0.1:port) overlap: the new one cannot be
    bound beside it, so the frontend is stopped first, then started on its new address."""
    agg = DEPLOY / "mocker/deploy/agg.yaml"
    old = plans_for(agg, tmp_path, frontend_port=28126)["Frontend"]
    doc = yaml.safe_load(agg.read_text())
    doc["spec"]["services"]["Frontend"].setdefault("envs", []).append({"name": "DYN_HTTP_HOST", "value": "127.0.0.1"})
    path = tmp_path / "moved.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    new = plans_for(path, tmp_path, frontend_port=28126)["Frontend"]
    assert new.launch(0).listen_host == "127.0.0.1"
    assert strategy_for(new, 1, previous=old).kind == "Recreate"
    assert strategy_for(old, 1, previous=old) == Strategy("RollingUpdate", 1, 0)


def test_the_operators_env_reaches_each_replica_and_the_manifest_may_override_it(tmp_path):
    """As the operator injects it (ops reference §5.4): the component type, the DGD's Kubernetes namespace,
    canaries on in workers; no DYN_SYSTEM_ENABLED (Dynamo 1.6.1 warns that it is deprecated). The manifest's
    own value of an injected variable wins, as in the operator's merge."""
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/agg.yaml").read_text())
    path = tmp_path / "agg.yaml"
    path.write_text(yaml.safe_dump(doc))
    plans = plans_for(path, tmp_path, namespace="team")
    worker, frontend = plans["MockerWorker"].launch(0).env, plans["Frontend"].launch(0).env
    assert (worker["DYN_COMPONENT"], frontend["DYN_COMPONENT"]) == ("worker", "frontend")
    assert worker["DYN_PARENT_DGD_K8S_NAMESPACE"] == frontend["DYN_PARENT_DGD_K8S_NAMESPACE"] == "team"
    assert worker["DYN_HEALTH_CHECK_ENABLED"] == "true" and "DYN_HEALTH_CHECK_ENABLED" not in frontend
    assert "DYN_SYSTEM_ENABLED" not in worker
    doc["spec"]["services"]["MockerWorker"]["envs"] = [{"name": "DYN_HEALTH_CHECK_ENABLED", "value": "false"}]
    path.write_text(yaml.safe_dump(doc))
    assert plans_for(path, tmp_path)["MockerWorker"].launch(0).env["DYN_HEALTH_CHECK_ENABLED"] == "false"


def test_a_frontend_made_kserve_by_this_shell_binds_its_own_port_and_is_recreated(tmp_path):
    """Whether a frontend takes its service's socket is read as the frontend reads its config, from everything its
    replicas get: DYN_KSERVE_GRPC_SERVER in `run`'s shell makes it KServe (its gRPC server binds the fixed port),
    so the plan does not hand it a socket, its probes reach its HTTP routes' port, and it is never surged (two
    copies would race for the port) nor started beside a draining replica."""
    from dynamo.deploy.replica import Replica
    from dynamo.deploy.supervisor import Supervisor

    agg = DEPLOY / "mocker/deploy/agg.yaml"
    plan = plans_for(agg, tmp_path, environ={"PATH": "/usr/bin", "DYN_KSERVE_GRPC_SERVER": "1"},
                     frontend_port=28127)["Frontend"]
    assert not plan.handoff and plan.kserve
    launch = plan.launch(0)
    assert launch.shared_port is None and launch.http_port not in (None, 28127)
    assert launch.argv[launch.argv.index("--http-port") + 1] == "28127"
    surging = plans_for(agg, tmp_path, frontend_port=28127)["Frontend"]
    assert surging.handoff and strategy_for(surging, 1).kind == "RollingUpdate"
    assert strategy_for(plan, 1).kind == "Recreate"
    assert strategy_for(surging, 1, previous=plan).kind == strategy_for(plan, 1, previous=surging).kind == "Recreate"
    sup = Supervisor({"Frontend": plan}, out=open("/dev/null", "w"))
    sup.replicas["Frontend", 0] = Replica("Frontend", 0, launch, plan=plan, stopping=True)
    assert sup.deferred(plan)
    # a plan whose socket address cannot be read binds its own port too, whatever else it says
    surging.listen = None
    assert strategy_for(surging, 1).kind == "Recreate"
    sup.plans["Frontend"] = surging
    assert sup.deferred(surging)
