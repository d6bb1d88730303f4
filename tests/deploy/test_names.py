"""Kubernetes names (`names.py`): a DGD name the API server would refuse is refused by `validate`; the
names derived from long DGD and service names are cut and end in a stable hash, so two of them sharing
their first 63 characters no longer become one Deployment and Service; names that still coincide
(`Worker` / `worker`) are refused by `validate` and so by `render` and `run`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dynamo.deploy.names import k8s_name, label_value
from dynamo.deploy.render import render
from tests.deploy.manifests import check, load, mocker_graph
from tests.fixtures.procs import REPO

LONG = "a" * 58  # `{dgd}-{service}` of its services is over 63 characters


def two_workers(dgd: str, first: str, second: str) -> dict:
    doc = mocker_graph()
    services = doc["spec"]["services"]
    services[first] = services.pop("MockerWorker")
    services[second] = yaml.safe_load(yaml.safe_dump(services[first]))
    doc["metadata"]["name"] = dgd
    return doc


def test_long_names_are_cut_and_hashed_stably_and_stay_apart():
    one, two = k8s_name(LONG, "worker1"), k8s_name(LONG, "worker2")
    assert one != two and len(one) == len(two) == 63
    assert one.startswith(LONG[:50]) and one == k8s_name(LONG, "worker1")  # stable across runs
    assert k8s_name("vllm-agg", "VllmDecodeWorker") == "vllm-agg-vllmdecodeworker"  # short ones as before
    assert label_value("team-" + LONG) == k8s_name("team-" + LONG) and len(label_value("team-" + LONG)) == 63
    assert label_value("prod-vllm-agg") == "prod-vllm-agg"


def test_render_gives_each_long_named_service_its_own_objects(tmp_path):
    objects = render(load(two_workers(LONG, "worker1", "worker2"), tmp_path))
    deployments = [o["metadata"]["name"] for o in objects if o["kind"] == "Deployment"]
    services = [o["metadata"]["name"] for o in objects if o["kind"] == "Service"]
    assert len(set(deployments)) == len(deployments) == 3 and len(set(services)) == 3
    assert all(len(name) <= 63 for name in deployments)
    selectors = [o["spec"]["selector"]["matchLabels"] for o in objects if o["kind"] == "Deployment"]
    assert len({tuple(sorted(s.items())) for s in selectors}) == 3  # no Deployment selects another's pods


@pytest.mark.parametrize("first, second", [("Worker", "worker"), ("decode_worker", "decode-worker")])
def test_services_that_would_share_a_kubernetes_name_are_refused(tmp_path, first, second):
    report = check(two_workers("g", first, second), tmp_path)
    (error,) = report.errors
    assert f"graph g, service {first}" in error and f"graph g, service {second}" in error
    assert f"would have one Kubernetes name, 'g-{second.lower()}'" in error and "rename one" in error


@pytest.mark.parametrize("name", ["My_Graph", "Graph", "-graph", "graph-", "a" * 254])
def test_a_dgd_name_kubernetes_refuses_is_an_error(tmp_path, name):
    doc = mocker_graph()
    doc["metadata"]["name"] = name
    (error,) = check(doc, tmp_path).errors
    assert error.startswith(f"metadata.name: {name!r} must ") and "Kubernetes refuses the DynamoGraphDeployment" in error


@pytest.mark.parametrize("name", ["g", "my-graph", "graph.v2", "0graph"])
def test_a_dgd_name_kubernetes_accepts_is_fine(tmp_path, name):
    doc = mocker_graph()
    doc["metadata"]["name"] = name
    assert check(doc, tmp_path).errors == []


@pytest.mark.e2e  # the CLI as a process
def test_render_refuses_a_collision(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(two_workers("g", "Worker", "worker")))
    done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "render", str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "would have one Kubernetes name" in done.stderr and done.stdout == ""
