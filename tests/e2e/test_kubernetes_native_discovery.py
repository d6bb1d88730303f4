"""Kubernetes-native discovery end to end: a frontend and a mocker run as pods would under NVIDIA
Dynamo's operator (DYN_DISCOVERY_BACKEND=kubernetes, POD_NAME/POD_NAMESPACE/POD_UID, no etcd)
against a STAND-IN of the Kubernetes API server (tests/fixtures/kube_api_standin.py; no API server
runs here). The test plays the operator and the kubelet: it says which pods are ready through a
discovery EndpointSlice. The worker's records are a DynamoWorkerMetadata in Dynamo's layout, served
only while its pod is ready; it deletes them when it stops."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from dynamo.runtime.discovery.kube_view import pod_instance_id
from tests.fixtures.procs import Cluster, free_port, http_get, metric_value, wait_until

pytestmark = pytest.mark.e2e

NS = "team-a"
MODEL = "kube-model"
WORKER_POD = "agg-vllmworker-0"
LABELS = {"nvidia.com/dynamo-discovery-backend": "kubernetes", "nvidia.com/dynamo-discovery-enabled": "true"}
SLICES = f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
METADATA = f"/apis/nvidia.com/v1alpha1/namespaces/{NS}/dynamoworkermetadatas"


def _send(url: str, method: str, body: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def cluster(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kube")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    # POD_IP as the downward API gives it: both planes bind every interface and advertise it.
    c = Cluster(tmp, tiny_model, "kubernetes", {"DYN_KUBE_API_SERVER": api, "POD_NAMESPACE": NS, "POD_IP": "127.0.0.1",
                                               "ETCD_ENDPOINTS": "http://127.0.0.1:9"})  # no etcd anywhere
    try:
        c.start("tests.fixtures.kube_api_standin", [str(port)], name="kube-api")
        wait_until(lambda: http_get(api + METADATA)[0] == 200, 60, "the API stand-in")
        c.api = api  # type: ignore[attr-defined]
        c.worker = c.mocker(model_name=MODEL, env={"POD_NAME": WORKER_POD, "POD_UID": "uid-worker"})
        c.frontend("--router-mode", "kv", env={"POD_NAME": "agg-frontend-0", "POD_UID": "uid-frontend"})
        wait_until(lambda: _send(api + f"{METADATA}/{WORKER_POD}", "GET")[0] == 200, 120, "the worker's metadata")
        yield c
    finally:
        c.stop()


def _ready(c, ready: bool) -> None:
    """The operator's EndpointSlice for the worker's Service, its one pod ready or not."""
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "agg-vllmworker-x1", "labels": LABELS},
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": ready},
                           "targetRef": {"kind": "Pod", "name": WORKER_POD, "namespace": NS}}]}
    status, _ = _send(c.api + SLICES, "POST", body)
    if status == 409:
        status, _ = _send(c.api + f"{SLICES}/agg-vllmworker-x1", "PUT", body)
    assert status in (200, 201)


def test_the_workers_records_are_a_dynamoworkermetadata_in_dynamos_layout(cluster):
    status, obj = _send(cluster.api + f"{METADATA}/{WORKER_POD}", "GET")
    assert status == 200
    assert obj["metadata"]["ownerReferences"][0] == {"apiVersion": "v1", "kind": "Pod", "name": WORKER_POD,
                                                     "uid": "uid-worker", "controller": False,
                                                     "blockOwnerDeletion": False}
    data = obj["spec"]["data"]
    endpoint = data["endpoints"]["dynamo/backend/generate"]
    assert endpoint["type"] == "Endpoint" and endpoint["instance_id"] == pod_instance_id(WORKER_POD)
    assert data["model_cards"]["dynamo/backend/generate"]["card_json"]["display_name"] == MODEL
    assert set(json.loads(http_get(cluster.api + "/standin/applies")[1])) == {"dynamo-worker"}


def test_a_worker_serves_only_while_its_pod_is_ready(cluster):
    assert cluster.models() == []  # registered, but no EndpointSlice says its pod is ready
    _ready(cluster, True)
    wait_until(lambda: cluster.models() == [MODEL], 60, "the model listed once its pod is ready")
    client = cluster.openai_client()
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=3).usage.completion_tokens == 3
    # The worker's KV-event publisher was found through its metadata too: the router routes on events.
    mode = {"model": MODEL, "mode": "kv-events"}
    wait_until(lambda: metric_value(http_get(cluster.base_url + "/metrics")[1].decode(), "dynamo_frontend_router_mode",
                                    mode) == 1.0, 60, "exact KV routing")
    _ready(cluster, False)  # its readiness probe failed
    wait_until(lambda: cluster.models() == [], 60, "the model gone with its pod's readiness")
    with pytest.raises((openai.NotFoundError, openai.InternalServerError, openai.APIStatusError)):
        client.completions.create(model=MODEL, prompt="hi", max_tokens=3)
    _ready(cluster, True)
    wait_until(lambda: cluster.models() == [MODEL], 60, "the model back")
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens == 2


def test_a_worker_whose_metadata_is_deleted_applies_it_again(cluster):
    """Deleted by hand, or lost with the API server's store: the worker puts its records back, as a
    worker re-registers after losing its etcd lease, and keeps serving."""
    first = _send(cluster.api + f"{METADATA}/{WORKER_POD}", "GET")[1]["metadata"]["resourceVersion"]
    assert _send(cluster.api + f"{METADATA}/{WORKER_POD}", "DELETE")[0] == 200
    wait_until(lambda: _send(cluster.api + f"{METADATA}/{WORKER_POD}", "GET")[0] == 200, 30, "metadata re-applied")
    again = _send(cluster.api + f"{METADATA}/{WORKER_POD}", "GET")[1]
    assert int(again["metadata"]["resourceVersion"]) > int(first)
    assert again["spec"]["data"]["endpoints"]["dynamo/backend/generate"]["instance_id"] == pod_instance_id(WORKER_POD)
    wait_until(lambda: cluster.models() == [MODEL], 60, "the model listed again")
    client = cluster.openai_client()
    assert client.completions.create(model=MODEL, prompt="hi", max_tokens=2).usage.completion_tokens == 2
    assert "re-applied this process's" in cluster.worker.log()


def test_a_stopping_worker_deletes_its_metadata(cluster):
    assert cluster.worker.stop() == 0
    wait_until(lambda: _send(cluster.api + f"{METADATA}/{WORKER_POD}", "GET")[0] == 404, 30, "metadata deleted")
    wait_until(lambda: cluster.models() == [], 60, "the model gone")
