"""`render`: plain Kubernetes objects that validate against the API schemas, with the
operator's env and probes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

EXAMPLES = sorted((REPO / "examples/backends").glob("*/deploy/*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_rendered_objects_validate(path):
    import kubernetes_validate as kv  # the `test` extra; imported here so the other tests never depend on it

    (graph,) = validate_file(path).graphs
    objects = render(graph, "team-a", include_etcd=True)
    for obj in objects:
        kv.validate(obj, kv.latest_version(), strict=True)
    kinds = [o["kind"] for o in objects]
    assert kinds.count("Deployment") == len(graph.spec.services) + 1
    assert kinds.count("ConfigMap") == 1


def by_name(objects, kind, name):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_env_probes_and_resources_follow_the_operator():
    (graph,) = validate_file(REPO / "examples/backends/vllm/deploy/disagg_router.yaml").graphs
    objects = render(graph, "prod")
    config = by_name(objects, "ConfigMap", "vllm-v1-disagg-router-env")["data"]
    assert config["DYN_NAMESPACE"] == "prod-vllm-v1-disagg-router"
    assert config["DYN_PARENT_DGD_K8S_NAME"] == "vllm-v1-disagg-router"
    assert config["DYN_DISCOVERY_BACKEND"] == "etcd"
    assert config["DYN_PARENT_DGD_K8S_NAMESPACE"] == "prod"  # the operator's (ops reference §5.4)
    worker = by_name(objects, "Deployment", "vllm-v1-disagg-router-vllmprefillworker")
    assert worker["spec"]["replicas"] == 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["terminationGracePeriodSeconds"] == 60
    (main,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in main["env"]}
    assert env["DYN_SYSTEM_PORT"] == "9090" and env["DYN_COMPONENT"] == "worker"
    assert "DYN_SYSTEM_ENABLED" not in env  # deprecated in Dynamo 1.6.1: ignored, and warned about on every start
    assert env["DYN_HEALTH_CHECK_ENABLED"] == "true"  # the operator turns canaries on in worker pods
    for labels in (worker["metadata"]["labels"], worker["spec"]["template"]["metadata"]["labels"]):
        assert labels["nvidia.com/dynamo-namespace"] == "prod-vllm-v1-disagg-router"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert {"secretRef": {"name": "hf-token-secret"}} in main["envFrom"]
    assert main["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert main["livenessProbe"]["httpGet"] == {"path": "/live", "port": 9090}
    assert main["readinessProbe"]["httpGet"] == {"path": "/health", "port": 9090}
    assert main["startupProbe"]["failureThreshold"] == 720
    frontend = by_name(objects, "Deployment", "vllm-v1-disagg-router-frontend")["spec"]["template"]["spec"]
    fmain = frontend["containers"][0]
    assert fmain["livenessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert "127.0.0.1:8000/health" in fmain["readinessProbe"]["exec"]["command"][-1]
    assert {"name": "DYN_ROUTER_MODE", "value": "kv"} in fmain["env"]
    assert "DYN_HEALTH_CHECK_ENABLED" not in {e["name"] for e in fmain["env"]}
    assert {"name": "DYN_COMPONENT", "value": "frontend"} in fmain["env"]
    service = by_name(objects, "Service", "vllm-v1-disagg-router-frontend")
    assert service["spec"]["ports"][0]["port"] == 8000


@pytest.mark.e2e  # runs the CLI as a process
def test_cli_prints_yaml():
    out = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render",
                          str(REPO / "examples/backends/mocker/deploy/agg.yaml")],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service", "Deployment", "Service"]


def render_cli(capsys, *argv: str) -> tuple[list[dict], str]:
    """`python -m dynamo.deploy render ...` in-process (argument parsing, warnings, YAML out)."""
    from dynamo.deploy.__main__ import main

    assert main(["render", *argv]) == 0
    out = capsys.readouterr()
    return list(yaml.safe_load_all(out.out)), out.err


def graph_with_pvcs(tmp_path) -> str:
    doc = yaml.safe_load((REPO / "examples/backends/mocker/deploy/agg.yaml").read_text())
    doc["spec"]["pvcs"] = [{"name": "scratch", "create": True, "size": "5Gi", "storageClass": "fast",
                            "volumeAccessMode": "ReadWriteOnce"},
                           {"name": "existing"}]  # not ours to create: mounted, never rendered
    doc["spec"]["services"]["MockerWorker"]["volumeMounts"] = [{"name": "scratch", "mountPoint": "/scratch"},
                                                               {"name": "existing", "mountPoint": "/data"}]
    path = tmp_path / "pvcs.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_cli_namespace_etcd_flags_and_created_pvcs(tmp_path, capsys):
    path = graph_with_pvcs(tmp_path)
    objects, err = render_cli(capsys, path, "--namespace", "team-x", "--etcd-endpoints", "http://etcd.infra:2379")
    assert {o["metadata"].get("namespace") for o in objects} == {"team-x"}
    config = by_name(objects, "ConfigMap", "mocker-agg-env")["data"]
    assert config["ETCD_ENDPOINTS"] == "http://etcd.infra:2379"
    assert config["DYN_NAMESPACE"] == "team-x-mocker-agg"
    assert not any(o["metadata"]["name"] == "etcd" for o in objects)
    assert "etcd" not in err  # endpoints given: nothing to warn about
    (claim,) = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "scratch"
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}},
                             "storageClassName": "fast"}
    pod = by_name(objects, "Deployment", "mocker-agg-mockerworker")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    # Not a model the worker loads by path: writable (only model caches are mounted read-only).
    assert mounts["scratch"] == {"name": "scratch", "mountPath": "/scratch"}
    assert mounts["existing"] == {"name": "existing", "mountPath": "/data"}
    assert {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch"}} in pod["volumes"]
    assert {"name": "existing", "persistentVolumeClaim": {"claimName": "existing"}} in pod["volumes"]


def test_cli_include_etcd_and_default_etcd_warning(capsys):
    path = str(REPO / "examples/backends/mocker/deploy/agg.yaml")
    objects, err = render_cli(capsys, path, "--include-etcd")
    assert by_name(objects, "Deployment", "etcd")["spec"]["replicas"] == 1
    assert by_name(objects, "Service", "etcd")["spec"]["ports"][0]["port"] == 2379
    assert by_name(objects, "ConfigMap", "mocker-agg-env")["data"]["ETCD_ENDPOINTS"] == "http://etcd:2379"
    assert "warning" not in err
    objects, err = render_cli(capsys, path)
    assert not any(o["metadata"]["name"] == "etcd" for o in objects)
    assert "warning: the graph discovers through etcd at http://etcd:2379" in err
    assert {o["metadata"].get("namespace") for o in objects} == {None}  # manifest has none: kubectl's choice


def test_plain_objects_beside_the_graph_are_rendered_with_it(tmp_path, capsys):
    # The profiler's final_config.yaml is [ConfigMap, DGD]: the graph mounts the profile ConfigMap, so
    # leaving it out left the planner and mocker pods waiting for a volume that never comes.
    graph = yaml.safe_load((REPO / "examples/backends/mocker/deploy/agg.yaml").read_text())
    profile = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planner-profile-data-1234"},
               "data": {"prefill_raw_data.json": "{}"}}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}}
    path = tmp_path / "final_config.yaml"
    path.write_text(yaml.safe_dump_all([profile, graph, binding]))
    docs, _ = render_cli(capsys, str(path), "--namespace", "team")
    passed = next(d for d in docs if d["metadata"]["name"] == "planner-profile-data-1234")
    assert passed["data"] == profile["data"] and passed["metadata"]["namespace"] == "team"
    cluster_scoped = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert "namespace" not in cluster_scoped["metadata"]


def test_a_file_of_several_graphs_renders_each(tmp_path, capsys):
    # Dynamo's GlobalPlanner examples put a control graph and the model graphs in one file.
    agg = yaml.safe_load((REPO / "examples/backends/mocker/deploy/agg.yaml").read_text())
    control = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "metadata": {"name": "gp-ctrl"},
               "spec": {"services": {"GlobalPlanner": {"componentType": "planner", "replicas": 1, "extraPodSpec": {
                   "mainContainer": {"image": "img:1", "command": ["python3", "-m", "dynamo.global_planner"],
                                     "args": ["--max-total-gpus", "8"]}}}}}}
    path = tmp_path / "graphs.yaml"
    path.write_text(yaml.safe_dump_all([control, agg]))
    docs, err = render_cli(capsys, str(path), "--include-etcd")
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"]
    assert "gp-ctrl-globalplanner" in names and "mocker-agg-frontend" in names
    assert names.count("etcd") == 1  # shared objects once
    assert err.count("etcd") <= 1  # a warning about the cluster said once, not per graph


def test_pods_are_scraped_as_operator_managed_ones_unless_the_graph_opts_out():
    (graph,) = validate_file(REPO / "examples/backends/mocker/deploy/agg.yaml").graphs
    pods = {o["metadata"]["name"]: o["spec"]["template"]["metadata"] for o in render(graph) if o["kind"] == "Deployment"}
    frontend, worker = pods["mocker-agg-frontend"], pods["mocker-agg-mockerworker"]
    assert frontend["labels"]["nvidia.com/metrics-enabled"] == "true"  # what Dynamo's PodMonitors select
    assert frontend["annotations"]["prometheus.io/port"] == "8000"
    assert worker["annotations"]["prometheus.io/port"] == "9090" and worker["annotations"]["prometheus.io/scrape"] == "true"
    graph.metadata.annotations = {"nvidia.com/enable-metrics": "false"}  # Dynamo's opt-out
    for obj in render(graph):
        if obj["kind"] == "Deployment":
            meta = obj["spec"]["template"]["metadata"]
            assert "nvidia.com/metrics-enabled" not in meta["labels"]
            assert not any(k.startswith("prometheus.io/") for k in meta.get("annotations", {}))


@pytest.mark.parametrize("args, env, port", [
    (["--http-port", "8000", "--kserve-grpc-server"], [], 8788),
    (["--kserve-grpc-server", "--grpc-metrics-port=9300"], [], 9300),
    ([], [{"name": "DYN_KSERVE_GRPC_SERVER", "value": "true"}, {"name": "DYN_GRPC_METRICS_PORT", "value": "9400"}],
     9400),
    (["--kserve-grpc-server", "--no-kserve-grpc-server"], [], None),
])
def test_a_kserve_frontend_is_probed_where_its_http_routes_are(tmp_path, args, env, port):
    """Dynamo's --kserve-grpc-server puts gRPC on the frontend's port and the HTTP routes on
    --grpc-metrics-port: the probes go there, and the container names that port."""
    doc = yaml.safe_load((REPO / "examples/backends/mocker/deploy/agg.yaml").read_text())
    main = doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]
    main["args"] = args
    main["env"] = env
    path = tmp_path / "kserve.yaml"
    path.write_text(yaml.safe_dump(doc))
    (graph,) = validate_file(path).graphs
    frontend = by_name(render(graph, "prod"), "Deployment", "mocker-agg-frontend")["spec"]["template"]["spec"]
    (container,) = frontend["containers"]
    probed = port or 8000
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": probed}
    assert f"127.0.0.1:{probed}/health" in container["readinessProbe"]["exec"]["command"][-1]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == ({"http": 8000, "metrics": port} if port else {"http": 8000})
