"""`render --discovery kubernetes`: the planner runs as its own service
account, the only one the scale Role is bound to (the frontend and workers keep the discovery account,
which the planner is bound to as well), and the Role names the graph's scaled objects."""

from __future__ import annotations

from dynamo.deploy.render import render
from tests.deploy.test_planner_rbac import graph


def test_the_planner_alone_may_scale_the_graph_under_kubernetes_discovery(tmp_path):
    g = graph(tmp_path, {"backend": "mocker", "mode": "disagg", "optimization_target": "latency"})
    objects = render(g, "team", discovery="kubernetes", warnings=[])
    accounts = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["serviceAccountName"]
                for o in objects if o["kind"] == "Deployment"}
    assert accounts["g-planner"] == "g-planner"
    assert {accounts["g-frontend"], accounts["g-mockerdecodeworker"]} == {"g-discovery"}
    bindings = {o["metadata"]["name"]: [s["name"] for s in o["subjects"]] for o in objects if o["kind"] == "RoleBinding"}
    assert bindings["g-planner"] == ["g-planner"] and "g-planner" in bindings["g-discovery"]
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "g-planner")
    scaling = {r["resources"][0]: r.get("resourceNames") for r in role["rules"] if r["resources"][0].endswith("/scale")}
    assert scaling == {"deployments/scale": ["g-mockerdecodeworker"],
                       "leaderworkersets/scale": ["g-mockerprefillworker"]}
