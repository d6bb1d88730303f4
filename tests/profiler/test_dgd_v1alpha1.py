"""A v1alpha1 DGD (an override as pre-1.0 guides write it) in the v1beta1 shape, as Dynamo's operator
converts between its served versions: the main container is `main` whatever it was called, sidecars stay
beside it, resources become the container's (a `gpuType` has no v1beta1 form), PVCs become pod volumes (one
to create is refused; a compilation cache becomes `compilationCache`), the scaling adapter's opt-in, probes,
shared memory."""

from __future__ import annotations

import pytest

from dynamo.profiler.dgd_v1alpha1 import as_v1beta1, component


def convert(svc: dict) -> dict:
    return component("decode", svc, "spec.services.decode")


def containers(comp: dict) -> dict[str, dict]:
    return {c["name"]: c for c in comp["podTemplate"]["spec"]["containers"]}


def test_the_main_container_is_main_whatever_v1alpha1_called_it_and_sidecars_stay_beside_it():
    sidecar = {"name": "log-shipper", "image": "fluent-bit:3"}
    comp = convert({"extraPodSpec": {"mainContainer": {"name": "vllm", "image": "my/vllm:1", "args": ["--x"]},
                                     "containers": [sidecar], "nodeSelector": {"gpu": "h200"}}})
    assert containers(comp) == {"main": {"name": "main", "image": "my/vllm:1", "args": ["--x"]},
                                "log-shipper": sidecar}
    assert list(containers(comp)) == ["main", "log-shipper"]
    assert comp["podTemplate"]["spec"]["nodeSelector"] == {"gpu": "h200"}


def test_resources_go_into_the_main_container_and_a_gpu_type_is_refused():
    comp = convert({"resources": {"requests": {"cpu": "4", "memory": "16Gi", "custom": {"rdma/ib": "1"}},
                                  "limits": {"gpu": 2, "custom": {"example.com/fpga": 1}}}})
    assert containers(comp)["main"]["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi", "rdma/ib": "1"},
        "limits": {"nvidia.com/gpu": "2", "example.com/fpga": "1"}}
    with pytest.raises(ValueError, match=r"decode\.resources\.limits\.gpuType: has no nvidia.com/v1beta1 form"):
        convert({"resources": {"limits": {"gpu": "1", "gpuType": "h100"}}})


def test_pvcs_become_pod_volumes_one_to_create_is_refused_and_a_compilation_cache_is_its_own_field():
    comp = convert({"volumeMounts": [{"name": "models", "mountPoint": "/models"},
                                     {"name": "cache", "mountPoint": "/root/.cache/vllm", "useAsCompilationCache": True}]})
    assert comp["podTemplate"]["spec"]["volumes"] == [{"name": "models", "persistentVolumeClaim": {"claimName": "models"}}]
    assert containers(comp)["main"]["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert comp["compilationCache"] == {"pvcName": "cache", "mountPath": "/root/.cache/vllm"}
    with pytest.raises(ValueError, match=r"spec.pvcs: PVC 'models' with create: true has no nvidia.com/v1beta1 form"):
        as_v1beta1({"spec": {"pvcs": [{"name": "models", "create": True, "size": "100Gi"}], "services": {}}})
    existing = as_v1beta1({"spec": {"pvcs": [{"name": "models"}], "services": {"decode": {"replicas": 1}}}})
    assert existing["spec"] == {"components": [{"name": "decode", "replicas": 1}]}


@pytest.mark.parametrize("adapter, opted_in", [
    ({"enabled": True}, True), ({"enabled": False}, False), ({"enabled": True, "disable": True}, False), ({}, False),
])
def test_the_scaling_adapter_opt_in(adapter, opted_in):
    assert ("scalingAdapter" in convert({"scalingAdapter": adapter})) is opted_in


def test_probes_shared_memory_and_the_token_go_where_v1beta1_keeps_them():
    live = {"httpGet": {"path": "/live", "port": 9090}, "periodSeconds": 5}
    own = {"httpGet": {"path": "/mine", "port": 9090}}
    comp = convert({"livenessProbe": live, "readinessProbe": {"exec": {"command": ["true"]}},
                    "sharedMemory": {"disabled": True}, "envFromSecret": "tok",
                    "extraPodSpec": {"mainContainer": {"readinessProbe": own}}})
    main = containers(comp)["main"]
    assert main["livenessProbe"] == live and main["readinessProbe"] == own  # the container's own wins
    assert main["envFrom"] == [{"secretRef": {"name": "tok"}}]
    assert comp["sharedMemorySize"] == "0"
    assert convert({"sharedMemory": {"size": "16Gi"}})["sharedMemorySize"] == "16Gi"
    assert "sharedMemorySize" not in convert({"sharedMemory": {"disabled": False}})


def test_types_and_a_partial_stays_partial():
    assert convert({"componentType": "worker", "subComponentType": "prefill"}) == {"name": "decode", "type": "prefill"}
    assert convert({"componentType": "main"}) == {"name": "decode", "type": "worker"}
    assert convert({"replicas": 2}) == {"name": "decode", "replicas": 2}
    with pytest.raises(ValueError, match=r"decode.dynamoNamespace: has no nvidia.com/v1beta1 form"):
        convert({"dynamoNamespace": "x"})
