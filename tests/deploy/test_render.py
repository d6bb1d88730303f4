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
    worker = by_name(objects, "Deployment", "vllm-v1-disagg-router-vllmprefillworker")
    assert worker["spec"]["replicas"] == 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["terminationGracePeriodSeconds"] == 60
    (main,) = pod["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in main["env"]}
    assert env["DYN_SYSTEM_PORT"] == "9090" and env["DYN_SYSTEM_ENABLED"] == "true"
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
    service = by_name(objects, "Service", "vllm-v1-disagg-router-frontend")
    assert service["spec"]["ports"][0]["port"] == 8000


@pytest.mark.e2e  # runs the CLI as a process
def test_cli_prints_yaml():
    out = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render",
                          str(REPO / "examples/backends/mocker/deploy/agg.yaml")],
                         cwd=REPO, capture_output=True, text=True, timeout=60, check=True).stdout
    docs = list(yaml.safe_load_all(out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Deployment", "Service", "Deployment", "Service"]
