"""`render` of the guides' template and of v1beta1 graphs: objects (and the pods of every
LeaderWorkerSet) validate against the Kubernetes schemas, the operator's default commands,
GPU requests, read-only model caches, image-pull-secret discovery and multi-node groups."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
import yaml

from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

import kubernetes_validate as kv
K8S_VERSION = kv.latest_version()
DEPLOY = REPO / "examples/backends"
GRAPHS = sorted(DEPLOY.glob("*/deploy/v1beta1/*.yaml")) + [DEPLOY / "mocker/deploy/guide_template.yaml"]
MULTINODE = DEPLOY / "vllm/deploy/v1beta1/disagg_multinode.yaml"


def graph_of(path):
    (graph,) = validate_file(path).graphs
    return graph


def check_schema(obj):
    if obj["kind"] != "LeaderWorkerSet":
        kv.validate(obj, K8S_VERSION, strict=True)
        return
    for key in ("leaderTemplate", "workerTemplate"):  # a CRD: validate the pods it creates
        tpl = obj["spec"]["leaderWorkerTemplate"][key]
        kv.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **tpl["metadata"]},
                     "spec": tpl["spec"]}, K8S_VERSION, strict=True)


def pod(objects, kind, name):
    obj = next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return obj["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: f"{p.parts[-4]}/{p.parent.name}/{p.stem}")
def test_rendered_objects_validate(path):
    graph = graph_of(path)
    objects = render(graph, "team-a", include_etcd=True)
    for obj in objects:
        check_schema(obj)
    groups = [o for o in objects if o["kind"] in ("Deployment", "LeaderWorkerSet")]
    assert len(groups) == len(graph.spec.services) + 1  # + etcd


def test_guide_template_gets_default_command_gpu_limit_and_its_probe():
    objects = render(graph_of(DEPLOY / "mocker/deploy/guide_template.yaml"))
    (frontend,) = pod(objects, "Deployment", "mocker-guide-frontend")["containers"]
    assert frontend["command"] == ["python3", "-m", "dynamo.frontend"] and "args" not in frontend
    (worker,) = pod(objects, "Deployment", "mocker-guide-mockerworker")["containers"]
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"  # extended resources need a limit
    assert worker["readinessProbe"]["exec"]["command"][-1] == 'grep "Worker.*initialized" /tmp/worker.log'
    assert worker["command"] == ["/bin/sh", "-c"] and "tee /tmp/worker.log" in worker["args"][0]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DYN_NAMESPACE"] == "mocker-guide"


def test_v1beta1_frontend_with_only_an_image_and_worker_gpus():
    objects = render(graph_of(DEPLOY / "vllm/deploy/v1beta1/agg_router.yaml"), "prod")
    (frontend,) = pod(objects, "Deployment", "vllm-agg-router-frontend")["containers"]
    assert frontend["command"] == ["python3", "-m", "dynamo.frontend"]
    assert {"name": "DYN_ROUTER_MODE", "value": "kv"} in frontend["env"]
    (worker,) = pod(objects, "Deployment", "vllm-agg-router-vllmdecodeworker")["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["requests"]["ephemeral-storage"] == "2Gi"
    assert {"secretRef": {"name": "hf-token-secret"}} in worker["envFrom"]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/health", "port": 9090}


def test_model_cache_pvc_is_mounted_read_only():
    objects = render(graph_of(DEPLOY / "mocker/deploy/v1beta1/model_cache.yaml"))
    spec = pod(objects, "Deployment", "mocker-model-cache-mockerworker")
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["model-cache"] == {"name": "model-cache", "mountPath": "/opt/model-cache", "readOnly": True}
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in spec["volumes"]


@pytest.mark.e2e  # runs the render CLI as a process
def test_image_pull_secrets_discovered_by_registry_unless_disabled(tmp_path):
    doc = yaml.safe_load((DEPLOY / "mocker/deploy/guide_template.yaml").read_text())
    services = doc["spec"]["services"]
    services["Frontend"]["extraPodSpec"]["mainContainer"]["image"] = "nvcr.io/nvidia/dynamo:1.0"
    worker = services["MockerWorker"]
    worker["extraPodSpec"]["mainContainer"]["image"] = "nvcr.io/nvidia/dynamo:1.0"
    worker["annotations"] = {"nvidia.com/disable-image-pull-secret-discovery": "true"}
    worker["extraPodSpec"]["imagePullSecrets"] = [{"name": "mine"}]
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(doc))
    config = base64.b64encode(json.dumps({"auths": {"https://nvcr.io": {"auth": "eA=="}}}).encode()).decode()
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
         "metadata": {"name": "ngc"}, "data": {".dockerconfigjson": config}},
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": "hf"}, "data": {}}]}))
    out = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render", str(path), "--pull-secrets-from",
                          str(secrets), "--pull-secret", "hub=docker.io"],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    objects = list(yaml.safe_load_all(out))
    assert pod(objects, "Deployment", "mocker-guide-frontend")["imagePullSecrets"] == [{"name": "ngc"}]
    assert pod(objects, "Deployment", "mocker-guide-mockerworker")["imagePullSecrets"] == [{"name": "mine"}]


def test_multinode_service_renders_leader_worker_groups():
    warnings: list[str] = []
    objects = render(graph_of(MULTINODE), "prod", warnings=warnings)
    (lws,) = [o for o in objects if o["kind"] == "LeaderWorkerSet" and o["metadata"]["name"].endswith("-decode")]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    group = lws["spec"]["leaderWorkerTemplate"]
    assert lws["spec"]["replicas"] == 1 and group["size"] == 2
    leader, worker = (group[k]["spec"]["containers"][0] for k in ("leaderTemplate", "workerTemplate"))
    assert leader["command"][:2] == ["/bin/sh", "-c"]
    assert leader["command"][2].startswith("ray start --head --port=6379 && exec python3 -m dynamo.vllm")
    assert "--distributed-executor-backend ray" in leader["command"][2]
    assert worker["command"][2] == "exec ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"
    assert "readinessProbe" in leader and "readinessProbe" not in worker and "livenessProbe" not in worker
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-decode"))
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    assert any("etcd" in w for w in warnings)  # no etcd rendered or named: say so


def test_an_unknown_discovery_annotation_is_a_warning_and_etcd():
    graph = graph_of(DEPLOY / "mocker/deploy/v1beta1/agg_router.yaml")
    graph.metadata.annotations = {"nvidia.com/dynamo-discovery-backend": "zookeeper"}
    warnings: list[str] = []
    objects = render(graph, include_etcd=True, warnings=warnings)
    assert any("zookeeper discovery is not rendered" in w for w in warnings), warnings
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["DYN_DISCOVERY_BACKEND"] == "etcd" and config["ETCD_ENDPOINTS"] == "http://etcd:2379"


def test_kubernetes_discovery_renders_what_the_operator_would_give_its_pods():
    """No etcd: discovery-labelled Services (their EndpointSlices inherit the labels), the pods' uid
    through the downward API, and a service account allowed what discovery does; valid objects."""
    import kubernetes_validate as kv

    graph = graph_of(DEPLOY / "mocker/deploy/v1beta1/agg_router.yaml")
    graph.metadata.annotations = {"nvidia.com/dynamo-discovery-backend": "kubernetes"}
    warnings: list[str] = []
    objects = render(graph, "team-a", include_etcd=True, warnings=warnings, include_crd=True)
    for obj in objects:
        kv.validate(obj, kv.latest_version(), strict=True)
    kinds = [o["kind"] for o in objects]
    assert "etcd" not in {o["metadata"]["name"] for o in objects}  # no etcd even when asked for one
    assert {"ServiceAccount", "Role", "RoleBinding", "CustomResourceDefinition"} <= set(kinds)
    config = next(o for o in objects if o["kind"] == "ConfigMap")["data"]
    assert config["DYN_DISCOVERY_BACKEND"] == "kubernetes" and "ETCD_ENDPOINTS" not in config
    account = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    role = next(o for o in objects if o["kind"] == "Role")
    assert {r["resources"][0]: set(r["verbs"]) for r in role["rules"]} == {
        "endpointslices": {"get", "list", "watch"},
        "dynamoworkermetadatas": {"get", "list", "watch", "create", "update", "patch", "delete"}}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"
        assert {"POD_NAME", "POD_NAMESPACE", "POD_IP"} <= set(env)
        assert "readinessProbe" in pod["containers"][0]  # what makes a pod ready in its EndpointSlice
    for service in (o for o in objects if o["kind"] == "Service"):
        labels = service["metadata"]["labels"]
        assert labels["nvidia.com/dynamo-discovery-backend"] == "kubernetes"
        assert labels["nvidia.com/dynamo-discovery-enabled"] == "true"
    assert not any("etcd" in w for w in warnings), warnings
    render(graph, warnings=(without_crd := []))
    assert any("--include-crd" in w for w in without_crd)
