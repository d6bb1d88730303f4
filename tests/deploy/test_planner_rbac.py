"""Least privilege for a rendered planner (`planner_scaling`): told the graph's scaled objects, the Role
lets it read and scale only those (`resourceNames`), the multi-node pools' LeaderWorkerSets included
(`leaderworkersets/scale`), and finding them by label is the only namespace-wide right (`list`). The
audit's Role scaled any Deployment of the namespace. The Deployments it scales carry no `spec.replicas`
(the planner's to set), as those an HPA manages."""

from __future__ import annotations

import json

import yaml

from dynamo.deploy import planner_scaling
from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file


def graph(tmp_path, planner: dict):
    services = {
        "Frontend": {"componentType": "frontend", "extraPodSpec": {"mainContainer": {"image": "i"}}},
        "Planner": {"componentType": "planner", "extraPodSpec": {"mainContainer": {
            "image": "i", "command": ["python3", "-m", "dynamo.planner"], "args": ["--config", json.dumps(planner)]}}},
        "MockerDecodeWorker": {"componentType": "worker", "subComponentType": "decode", "extraPodSpec": {
            "mainContainer": {"image": "i", "command": ["python3", "-m", "dynamo.mocker"],
                              "args": ["--model-path", "m", "--disaggregation-mode", "decode"]}}},
        "MockerPrefillWorker": {"componentType": "worker", "subComponentType": "prefill", "multinode": {"nodeCount": 2},
                                "extraPodSpec": {"mainContainer": {
                                    "image": "i", "command": ["python3", "-m", "dynamo.mocker"],
                                    "args": ["--model-path", "m", "--disaggregation-mode", "prefill"]}}},
    }
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
                                    "metadata": {"name": "g"}, "spec": {"services": services}}))
    (found,) = validate_file(path).graphs
    return found


def role_of(objects: list[dict]) -> dict:
    return next(o for o in objects if o["kind"] == "Role")


def test_the_role_reads_and_scales_only_the_pools_the_planner_scales(tmp_path):
    g = graph(tmp_path, {"backend": "mocker", "mode": "disagg", "optimization_target": "latency"})
    targets = planner_scaling.scale_targets(g)
    assert targets == (["g-mockerdecodeworker"], ["g-mockerprefillworker"])
    objects = planner_scaling.rbac_objects("g", "team", {}, ["g-planner"], targets)
    rules = role_of(objects)["rules"]
    scaling = [r for r in rules if any(res.endswith("/scale") for res in r["resources"])]
    assert scaling == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch", "update"],
         "resourceNames": ["g-mockerdecodeworker"]},
        {"apiGroups": ["leaderworkerset.x-k8s.io"], "resources": ["leaderworkersets/scale"],
         "verbs": ["get", "patch", "update"], "resourceNames": ["g-mockerprefillworker"]}]
    unrestricted = [r for r in rules if "resourceNames" not in r]
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in unrestricted), unrestricted
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "g-planner", "namespace": "team"}]
    assert any(o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "g-planner" for o in objects)


def test_a_planner_that_scales_one_pool_may_scale_only_that_one(tmp_path):
    g = graph(tmp_path, {"backend": "mocker", "mode": "decode", "optimization_target": "latency"})
    deployments, groups = planner_scaling.scale_targets(g)
    assert (deployments, groups) == (["g-mockerdecodeworker"], [])
    rules = planner_scaling.scale_rules(deployments, groups)
    assert not any("leaderworkerset" in r["apiGroups"][0] for r in rules)
    advisory = graph(tmp_path, {"backend": "mocker", "optimization_target": "latency", "advisory": True})
    assert planner_scaling.scale_rules(*planner_scaling.scale_targets(advisory)) == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]}]


def test_render_leaves_the_replicas_of_the_planners_pools_to_it(tmp_path):
    """Set in the rendered Deployment, the DGD's replicas would reset the planner's count on every `kubectl
    apply` (as an HPA's): the pools it scales have none; the other services, and the pools of an advisory
    planner (it scales nothing), keep the DGD's."""
    def replicas(config: dict) -> dict:
        return {o["metadata"]["name"]: o["spec"].get("replicas") for o in render(graph(tmp_path, config), "team")
                if o["kind"] in ("Deployment", "LeaderWorkerSet")}

    scaled = replicas({"backend": "mocker", "mode": "disagg", "optimization_target": "latency"})
    assert scaled["g-mockerdecodeworker"] is None
    assert scaled["g-frontend"] == scaled["g-planner"] == 1
    assert scaled["g-mockerprefillworker"] == 1  # a LeaderWorkerSet: the planner scales Deployments here
    advisory = replicas({"backend": "mocker", "optimization_target": "latency", "advisory": True})
    assert advisory["g-mockerdecodeworker"] == 1
