"""The hierarchical example (a global router and its pools as DynamoGraphDeployments, Dynamo's layout)
validates, renders to objects Kubernetes accepts, and is consistent: the global router mounts its plan from
the ConfigMap beside it, and every pool namespace of the plan is the namespace the operator (and `render`)
gives one of the file's graphs, with a local router for the pool's workers."""

from __future__ import annotations

import json

import yaml

from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from dynamo.global_router.pools import parse_plan
from tests.fixtures.procs import REPO

EXAMPLE = REPO / "examples/global_router/hierarchical_mocker.yaml"


PLANNER_EXAMPLE = REPO / "examples/global_router/hierarchical_planner_mocker.yaml"


def test_the_example_validates_without_warnings():
    report = validate_file(EXAMPLE)
    assert report.errors == [] and report.warnings == []
    assert sorted(g.metadata.name for g in report.graphs) == ["gr-ctrl", "gr-decode", "gr-prefill-bulk",
                                                             "gr-prefill-fast"]


def test_the_planner_example_validates_and_renders():
    import kubernetes_validate as kv

    report = validate_file(PLANNER_EXAMPLE)
    assert report.errors == [] and report.warnings == []
    for graph in report.graphs:
        for obj in render(graph, "demo"):
            kv.validate(obj, kv.latest_version(), strict=True)


def test_rendered_graphs_serve_the_plans_pools():
    import kubernetes_validate as kv

    config = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "ConfigMap")
    plan = parse_plan(json.loads(config["data"]["global_router_config.json"]))
    assert plan.warnings == ()
    pools = {ns for pool_set in plan.pools.values() for ns in pool_set.namespaces}
    namespaces = {}
    for graph in validate_file(EXAMPLE).graphs:
        objects = render(graph, "demo")
        for obj in objects:
            kv.validate(obj, kv.latest_version(), strict=True)
        env = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-env"))["data"]
        deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
        namespaces[env["DYN_NAMESPACE"]] = deployments
    assert pools < set(namespaces)  # every pool is a graph of this file
    for ns in pools:
        routers = [d for name, d in namespaces[ns].items() if name.endswith("-localrouter")]
        (container,) = routers[0]["spec"]["template"]["spec"]["containers"]
        assert container["args"][:2] == ["--endpoint", f"{ns}.{'prefill' if 'prefill' in ns else 'backend'}.generate"]
    ctrl = namespaces["demo-gr-ctrl"]["gr-ctrl-globalrouter"]["spec"]["template"]["spec"]
    assert {"name": "global-router-config", "configMap": {"name": config["metadata"]["name"]}} in ctrl["volumes"]


def test_a_broken_plan_in_the_files_config_map_fails_validation(tmp_path):
    """The plan the global router mounts from a ConfigMap of the same file is read as the router reads it:
    a mapping naming a pool that does not exist is an error at validate time, not a crash-looping pod."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    plan = json.loads(docs[0]["data"]["global_router_config.json"])
    plan["prefill_pool_selection_strategy"]["prefill_pool_mapping"] = [[0, 1], [0, 2]]
    plan["decode_pool_selection_strategy"]["itl_min"] = plan["decode_pool_selection_strategy"].pop("itl_min_ms")
    docs[0]["data"]["global_router_config.json"] = json.dumps(plan)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    report = validate_file(path)
    assert report.errors == ["graph gr-ctrl, service GlobalRouter: global router plan /config/global_router_config.json:"
                             " prefill_pool_selection_strategy.prefill_pool_mapping[1][1]: invalid pool index 2 (must "
                             "be 0 to 1)"]
    plan["prefill_pool_selection_strategy"]["prefill_pool_mapping"] = [[0, 1], [0, 1]]
    docs[0]["data"]["global_router_config.json"] = json.dumps(plan)
    path.write_text(yaml.safe_dump_all(docs))
    report = validate_file(path)
    assert report.errors == [] and any("itl_min is deprecated" in w for w in report.warnings)
