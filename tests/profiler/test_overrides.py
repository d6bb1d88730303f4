"""`spec.overrides.dgd` merged over the generated v1beta1 DGD as Dynamo's profiler merges it: a v1alpha1
override converted to v1beta1 with its worker args appended, a v1beta1 one merged structurally, named lists
merged by name, components matched by name or role, an unknown one refused; and requests as users save them
(exported from a cluster, a deprecated SKU spelling, a container-absolute model path)."""

from __future__ import annotations

import pytest
import yaml

from dynamo.deploy.validate import validate_file
from dynamo.profiler import dgdr
from dynamo.profiler.dgd import Choice, WorkerChoice, build_dgd
from tests.profiler.helpers import comps, main, pod

DISAGG = Choice("disagg", [WorkerChoice("prefill", 1), WorkerChoice("decode", 1)], "measured")


def request(**spec) -> dgdr.Request:
    return dgdr.parse({"metadata": {"name": "r1"}, "spec": {"model": "Qwen/Qwen3-0.6B", "backend": "vllm", **spec}})


def services(req: dgdr.Request, choice: Choice = DISAGG) -> dict:
    return comps(build_dgd(req, choice))


def validates(tmp_path, dgd: dict) -> None:
    path = tmp_path / "dgd.yaml"
    path.write_text(yaml.safe_dump(dgd))
    report = validate_file(path)
    assert report.ok, report.lines()


def test_a_v1alpha1_override_appends_worker_args_and_merges_env_by_name(tmp_path):
    over = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment", "spec": {"services": {
        "VllmDecodeWorker": {"componentType": "worker", "extraPodSpec": {"mainContainer": {
            "args": ["--max-model-len", "8192"]}}},
        "Frontend": {"envs": [{"name": "DYN_LOG", "value": "debug"}]}}}}
    req = request(overrides={"dgd": over}, features={"kvRouter": {"enabled": True}})
    dgd = build_dgd(req, DISAGG)
    svcs = comps(dgd)
    generated = main(services(request())["VllmDecodeWorker"])["args"]
    assert dgd["apiVersion"] == "nvidia.com/v1beta1"  # the override's version says how to read it, not the output's
    assert main(svcs["VllmDecodeWorker"])["args"] == generated + ["--max-model-len", "8192"]  # model and role kept
    assert svcs["VllmDecodeWorker"]["type"] == "decode"  # `componentType: worker` is no change of role
    assert main(svcs["VllmPrefillWorker"])["args"] == main(services(request())["VllmPrefillWorker"])["args"]
    assert {e["name"] for e in main(svcs["Frontend"])["env"]} == {"DYN_ROUTER_MODE", "DYN_LOG"}  # kvRouter's kept
    validates(tmp_path, dgd)


def test_a_v1alpha1_override_of_pod_fields_lands_where_v1beta1_keeps_them(tmp_path):
    over = {"spec": {"envs": [{"name": "G", "value": "1"}], "services": {"decode": {  # no apiVersion: v1alpha1
        "replicas": 2, "envFromSecret": "my-token", "sharedMemory": {"size": "8Gi"},
        "resources": {"limits": {"gpu": "2", "cpu": "8"}}, "extraPodMetadata": {"labels": {"pool": "d"}},
        "volumeMounts": [{"name": "scratch", "mountPoint": "/scratch"}],
        "extraPodSpec": {"nodeSelector": {"gpu": "h200"}}}}}}
    dgd = build_dgd(request(overrides={"dgd": over}), DISAGG)
    decode = comps(dgd)["VllmDecodeWorker"]
    assert dgd["spec"]["env"] == [{"name": "G", "value": "1"}]
    assert (decode["replicas"], decode["sharedMemorySize"]) == (2, "8Gi")
    assert main(decode)["envFrom"] == [{"secretRef": {"name": "my-token"}}]
    assert main(decode)["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "8"}
    assert decode["podTemplate"]["metadata"] == {"labels": {"pool": "d"}}
    assert pod(decode)["nodeSelector"] == {"gpu": "h200"}
    assert {"name": "scratch", "persistentVolumeClaim": {"claimName": "scratch"}} in pod(decode)["volumes"]
    assert {"name": "scratch", "mountPath": "/scratch"} in main(decode)["volumeMounts"]
    validates(tmp_path, dgd)
    with pytest.raises(ValueError, match="services.decode.ingress: has no nvidia.com/v1beta1 form"):
        build_dgd(request(overrides={"dgd": {"spec": {"services": {"decode": {"ingress": {"enabled": True}}}}}}),
                  DISAGG)


def test_a_v1beta1_override_merges_structurally_and_is_matched_by_role():
    over = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": "prod", "labels": {"tier": "gold"}},
            "spec": {"components": [
                {"name": "decode", "replicas": 3, "sharedMemorySize": "16Gi",
                 "podTemplate": {"metadata": {"labels": {"pool": "d"}},
                                 "spec": {"nodeSelector": {"gpu": "h200"},
                                          "containers": [{"name": "main", "args": ["--only", "these"],
                                                          "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]}]}}},
                {"name": "frontend", "replicas": 2}]}}
    dgd = build_dgd(request(overrides={"dgd": over}), DISAGG)
    decode = comps(dgd)["VllmDecodeWorker"]
    assert (dgd["metadata"]["name"], dgd["metadata"]["labels"]["tier"]) == ("prod", "gold")
    assert decode["replicas"] == 3 and decode["sharedMemorySize"] == "16Gi"
    assert pod(decode)["nodeSelector"] == {"gpu": "h200"}
    assert decode["podTemplate"]["metadata"]["labels"] == {"pool": "d"}
    assert main(decode)["args"] == ["--only", "these"]  # a structural merge replaces a list
    assert main(decode)["env"] == [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}]
    assert main(decode)["image"] and main(decode)["command"]  # the rest of the generated container stays
    assert main(decode)["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert comps(dgd)["Frontend"]["replicas"] == 2 and list(comps(dgd)) == ["Frontend", "VllmPrefillWorker",
                                                                            "VllmDecodeWorker"]


@pytest.mark.parametrize("over", [
    {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
     "spec": {"services": {"Encoder": {"replicas": 1}}}},
    {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
     "spec": {"components": [{"name": "Encoder", "replicas": 1}]}},
])
def test_an_override_of_a_component_the_graph_lacks_is_refused(over):
    with pytest.raises(ValueError, match="'Encoder' is not in the generated DGD"):
        build_dgd(request(overrides={"dgd": over}), DISAGG)
    agg = Choice("agg", [WorkerChoice("agg", 1)], "memory-fit")  # the profile picked agg: no decode pool
    with pytest.raises(ValueError, match="'decode' is not in the generated DGD .*VllmWorker"):
        build_dgd(request(overrides={"dgd": {"spec": {"components": [{"name": "decode", "replicas": 2}]}}}), agg)


def test_a_request_exported_from_a_cluster_reads_as_written(caplog):
    exported = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest",
                "metadata": {"name": "r1", "namespace": "a", "uid": "u-1", "resourceVersion": "9", "generation": 2,
                             "creationTimestamp": "2026-11-30T10:00:00Z", "managedFields": [{}]},
                "spec": {"model": "m", "hardware": {"gpuSku": "gb200_sxm"}},
                "status": {"phase": "Ready", "dgdName": "r1-dgd"}}
    req = dgdr.parse(exported)
    assert (req.metadata.name, req.metadata.namespace) == ("r1", "a")
    assert req.spec.hardware.gpuSku == "gb200" and "deprecated" in caplog.text


def test_a_container_absolute_model_path_is_not_joined_to_the_mount():
    cache = {"pvcName": "models", "pvcMountPath": "/opt/model-cache"}
    absolute = request(modelCache={**cache, "pvcModelPath": "/opt/model-cache/qwen3"})
    relative = request(modelCache={**cache, "pvcModelPath": "qwen3"})
    for req in (absolute, relative):
        assert main(services(req)["VllmDecodeWorker"])["args"][1] == "/opt/model-cache/qwen3"


def test_a_v1alpha1_envfrom_adds_to_the_generated_token_secret_unless_it_names_its_own(tmp_path):
    # v1alpha1 kept the token in `envFromSecret`, apart from the container's envFrom: an override's envFrom
    # was an addition. Naming its own envFromSecret replaces the token.
    config = {"configMapRef": {"name": "engine-env"}}
    added = {"spec": {"services": {"decode": {"extraPodSpec": {"mainContainer": {"envFrom": [config]}}}}}}
    decode = services(request(overrides={"dgd": added}))["VllmDecodeWorker"]
    assert main(decode)["envFrom"] == [{"secretRef": {"name": "hf-token-secret"}}, config]
    own = {"spec": {"services": {"decode": {"envFromSecret": "my-token",
                                            "extraPodSpec": {"mainContainer": {"envFrom": [config]}}}}}}
    decode = services(request(overrides={"dgd": own}))["VllmDecodeWorker"]
    assert main(decode)["envFrom"] == [{"secretRef": {"name": "my-token"}}, config]
    structural = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment", "spec": {"components": [
        {"name": "decode", "podTemplate": {"spec": {"containers": [{"name": "main", "envFrom": [config]}]}}}]}}
    decode = services(request(overrides={"dgd": structural}))["VllmDecodeWorker"]
    assert main(decode)["envFrom"] == [config]  # v1beta1: a list replaces


@pytest.mark.parametrize("over", [{"apiVersion": "nvidia.com/v1beta1"}, {"kind": "DynamoGraphDeployment"}])
def test_an_override_with_apiversion_or_kind_alone_is_refused_at_admission(over):
    with pytest.raises(ValueError, match="spec.overrides.dgd: give both apiVersion and kind, or neither"):
        request(overrides={"dgd": {**over, "metadata": {"name": "prod"}}})
    with pytest.raises(ValueError, match="spec.overrides.dgd.kind: must be DynamoGraphDeployment"):
        request(overrides={"dgd": {"apiVersion": "nvidia.com/v1beta1", "kind": "Deployment"}})
    with pytest.raises(ValueError, match="spec.overrides.dgd.apiVersion: must be nvidia.com/v1alpha1 or"):
        request(overrides={"dgd": {"apiVersion": "nvidia.com/v2", "kind": "DynamoGraphDeployment"}})


@pytest.mark.parametrize("backend, name, target", [
    ("sglang", "decode", "SglangWorker"),  # Dynamo's SGLang agg graph names its one worker `decode`
    ("vllm", "worker", "VllmWorker"),  # and vLLM's `worker`
    ("trtllm", "TRTLLMWorker", "TrtllmWorker"),
])
def test_an_override_written_for_dynamos_agg_graph_finds_our_worker(backend, name, target):
    agg = Choice("agg", [WorkerChoice("agg", 1)], "memory-fit")
    over = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
            "spec": {"components": [{"name": name, "replicas": 3}]}}
    dgd = build_dgd(request(backend=backend, overrides={"dgd": over}), agg)
    assert comps(dgd)[target]["replicas"] == 3 and len(comps(dgd)) == 2


@pytest.mark.parametrize("over", [
    {"spec": {"services": {"NoSuchWorker": {"replicas": 3}}}},  # no apiVersion: v1alpha1
    {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
     "spec": {"services": {"NoSuchWorker": {"componentType": "worker", "replicas": 3}}}},
    {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
     "spec": {"components": [{"name": "NoSuchWorker", "replicas": 3}]}},
    {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeployment",
     "spec": {"components": [{"name": "Zzz", "type": "worker", "replicas": 3}]}},
])
@pytest.mark.parametrize("backend", ["vllm", "sglang"])
def test_an_unknown_component_is_never_applied_to_the_graphs_one_worker(over, backend):
    # an agg graph has one worker: a name that is not it, nor Dynamo's name for it, nor a role, is an error
    agg = Choice("agg", [WorkerChoice("agg", 1)], "memory-fit")
    name = over["spec"].get("components", [{}])[0].get("name") or next(iter(over["spec"]["services"]))
    with pytest.raises(ValueError, match=f"component '{name}' is not in the generated DGD"):
        build_dgd(request(backend=backend, overrides={"dgd": over}), agg)
    ok = {"spec": {"components": [{"name": "worker" if backend == "vllm" else "decode", "replicas": 3}]}}
    assert comps(build_dgd(request(backend=backend, overrides={"dgd": ok}), agg))[
        f"{backend.capitalize()}Worker"]["replicas"] == 3  # Dynamo's own name still finds it
