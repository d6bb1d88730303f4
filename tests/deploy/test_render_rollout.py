"""Day-2 operations on a rendered graph: an edit of the graph's env rolls every pod, the operator's
deployment-strategy annotations become the Deployment's strategy, `spec.restart` re-rolls the graph,
and `--pod-monitors` emits the PodMonitors the operator would create."""

from __future__ import annotations

import copy

import pytest
import yaml

from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from tests.deploy.test_render import by_name, render_cli
from tests.fixtures.procs import REPO

AGG = REPO / "examples/backends/mocker/deploy/agg.yaml"
BETA = REPO / "examples/backends/mocker/deploy/v1beta1/agg_router.yaml"


def agg_doc() -> dict:
    return yaml.safe_load(AGG.read_text())


def write(tmp_path, doc, name="dgd.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def graph_of(tmp_path, doc):
    report = validate_file(write(tmp_path, doc))
    assert report.ok, report.errors
    (graph,) = report.graphs
    return graph


def templates(objects) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"]["template"] for o in objects if o["kind"] == "Deployment"}


def env_of(template) -> list[dict]:
    return template["spec"]["containers"][0]["env"]


# ----- D1: graph-wide env --------------------------------------------------------------------------

def test_a_graph_env_edit_changes_every_pod_template(tmp_path):
    a, b = agg_doc(), agg_doc()
    a["spec"]["envs"] = [{"name": "DYN_LOG", "value": "info"}]
    b["spec"]["envs"] = [{"name": "DYN_LOG", "value": "debug"}]
    before, after = (templates(render(graph_of(tmp_path, d))) for d in (a, b))
    assert set(before) == set(after) == {"mocker-agg-frontend", "mocker-agg-mockerworker"}
    for name in before:
        assert before[name] != after[name], name  # `kubectl apply` rolls every Deployment
        assert {"name": "DYN_LOG", "value": "debug"} in env_of(after[name])


def test_the_service_env_wins_over_the_graph_env_as_in_the_operator(tmp_path):
    doc = agg_doc()
    doc["spec"]["envs"] = [{"name": "SHARED", "value": "graph"}, {"name": "ONLY_GRAPH", "value": "g"}]
    worker = doc["spec"]["services"]["MockerWorker"]
    worker["envs"] = [{"name": "SHARED", "value": "service"}]
    worker["extraPodSpec"]["mainContainer"]["env"] = [{"name": "MAIN", "value": "$(ONLY_GRAPH)-m"}]
    pods = templates(render(graph_of(tmp_path, doc)))
    env = env_of(pods["mocker-agg-mockerworker"])
    names = [e["name"] for e in env]
    assert {"name": "SHARED", "value": "service"} in env and names.count("SHARED") == 1
    # The graph's entries come before the service's (Kubernetes expands `$(VAR)` from earlier entries).
    assert names.index("ONLY_GRAPH") < names.index("MAIN")
    assert {"name": "SHARED", "value": "graph"} in env_of(pods["mocker-agg-frontend"])


def test_the_config_map_keeps_discovery_only_and_its_checksum_rolls_the_pods(tmp_path):
    doc = agg_doc()
    doc["spec"]["envs"] = [{"name": "DYN_LOG", "value": "info"}]
    graph = graph_of(tmp_path, doc)
    objects = render(graph, etcd_endpoints="http://etcd-a:2379")
    config = by_name(objects, "ConfigMap", "mocker-agg-env")["data"]
    assert "DYN_LOG" not in config and config["ETCD_ENDPOINTS"] == "http://etcd-a:2379"
    moved = templates(render(graph, etcd_endpoints="http://etcd-b:2379"))
    for name, template in templates(objects).items():
        checksum = template["metadata"]["annotations"]["nvidia.com/config-checksum"]
        assert moved[name]["metadata"]["annotations"]["nvidia.com/config-checksum"] != checksum


# ----- D2: the operator's deployment-strategy annotations -----------------------------------------

def strategy_of(tmp_path, annotations, where="annotations"):
    doc = agg_doc()
    worker = doc["spec"]["services"]["MockerWorker"]
    if where == "annotations":
        worker["annotations"] = annotations
    else:
        worker["extraPodMetadata"] = {"annotations": annotations}
    return by_name(render(graph_of(tmp_path, doc)), "Deployment", "mocker-agg-mockerworker")["spec"].get("strategy")


def test_strategy_annotations_become_the_deployment_strategy(tmp_path):
    assert strategy_of(tmp_path, {"nvidia.com/deployment-strategy": "Recreate"}) == {"type": "Recreate"}
    rolling = {"nvidia.com/deployment-rolling-update-max-surge": "0",
               "nvidia.com/deployment-rolling-update-max-unavailable": "25%"}
    assert strategy_of(tmp_path, rolling, "extraPodMetadata") == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}
    assert strategy_of(tmp_path, {}) is None  # Kubernetes' default: the operator's too


def test_a_v1beta1_graph_annotation_sets_every_components_strategy(tmp_path):
    doc = yaml.safe_load(BETA.read_text())
    doc["spec"]["annotations"] = {"nvidia.com/deployment-strategy": "Recreate"}
    objects = render(graph_of(tmp_path, doc))
    assert {o["spec"]["strategy"]["type"] for o in objects if o["kind"] == "Deployment"} == {"Recreate"}


@pytest.mark.parametrize("annotations, message", [
    ({"nvidia.com/deployment-strategy": "BlueGreen"},
     "spec.services.MockerWorker.annotations.nvidia.com/deployment-strategy: expected one of RollingUpdate, Recreate"),
    ({"nvidia.com/deployment-rolling-update-max-surge": "one"},
     "spec.services.MockerWorker.annotations.nvidia.com/deployment-rolling-update-max-surge: expected a whole"),
    ({"nvidia.com/deployment-rolling-update-max-surge": "0", "nvidia.com/deployment-rolling-update-max-unavailable": "0%"},
     "spec.services.MockerWorker: nvidia.com/deployment-rolling-update-max-surge and"),
])
def test_validate_refuses_a_bad_strategy_annotation(tmp_path, annotations, message):
    doc = agg_doc()
    doc["spec"]["services"]["MockerWorker"]["annotations"] = annotations
    report = validate_file(write(tmp_path, doc))
    assert any(e.startswith(message) for e in report.errors), report.errors


def test_validate_refuses_a_bad_graph_wide_strategy_annotation(tmp_path):
    doc = yaml.safe_load(BETA.read_text())
    doc["spec"]["annotations"] = {"nvidia.com/deployment-rolling-update-max-unavailable": "-1"}
    report = validate_file(write(tmp_path, doc))
    assert any(e.startswith("spec.annotations.nvidia.com/deployment-rolling-update-max-unavailable: expected")
               for e in report.errors), report.errors


def test_recreate_with_rolling_settings_is_a_warning(tmp_path):
    doc = agg_doc()
    doc["spec"]["services"]["MockerWorker"]["annotations"] = {
        "nvidia.com/deployment-strategy": "Recreate", "nvidia.com/deployment-rolling-update-max-surge": "1"}
    report = validate_file(write(tmp_path, doc))
    assert report.ok and any("Recreate ignores" in w for w in report.warnings)


# ----- D3: spec.restart, topologyConstraint ----------------------------------------------------------

def restart_doc(restart) -> dict:
    doc = agg_doc()
    doc["spec"]["restart"] = restart
    return doc


def test_a_restart_id_is_stamped_on_every_pod_template_and_a_new_one_rolls_them(tmp_path):
    first = templates(render(graph_of(tmp_path, restart_doc({"id": "r1"}))))
    second = templates(render(graph_of(tmp_path, restart_doc({"id": "r2"}))))
    for name, template in first.items():
        assert template["metadata"]["annotations"]["nvidia.com/restartAt"] == "r1"
        assert second[name]["metadata"]["annotations"]["nvidia.com/restartAt"] == "r2"


def test_v1alpha1_restart_is_accepted_with_a_note_and_sequential_warns(tmp_path):
    report = validate_file(write(tmp_path, restart_doc(
        {"id": "r1", "strategy": {"type": "Sequential", "order": ["Frontend", "MockerWorker"]}})))
    assert report.ok, report.errors
    assert any("is rendered as a parallel restart" in w for w in report.warnings)
    assert any("spec.restart: a new id restarts the services" in n for n in report.notes)
    assert any(": note: spec.restart" in line for line in report.lines())
    parallel = validate_file(write(tmp_path, restart_doc({"id": "r1", "strategy": {"type": "Parallel"}})))
    assert parallel.ok and not parallel.warnings
    default = validate_file(write(tmp_path, restart_doc({"id": "r1"})))  # the operator's default: Sequential
    assert any("Sequential (the operator's default) is rendered as a parallel restart" in w for w in default.warnings)


def test_restart_order_names_services_and_its_type_is_checked(tmp_path):
    report = validate_file(write(tmp_path, restart_doc({"id": "r1", "strategy": {"order": ["Frontend", "Nope"]}})))
    assert "spec.restart.strategy.order[1]: 'Nope' is not a service of the graph" in report.errors
    report = validate_file(write(tmp_path, restart_doc({"id": "r1", "strategy": {"type": "Rolling"}})))
    assert any(e.startswith("spec.restart.strategy.type") for e in report.errors), report.errors


def test_restart_order_lists_every_service_once_and_never_with_parallel(tmp_path):
    """As the operator's webhook (validateRestartStrategyOrder): every service exactly once, no order with
    Parallel; an order left out is fine with either."""
    def errors(strategy: dict) -> list[str]:
        return validate_file(write(tmp_path, restart_doc({"id": "r1", "strategy": strategy}))).errors
    assert errors({"order": ["Frontend"]}) == [
        "spec.restart.strategy.order: MockerWorker not listed (it lists every service of the graph, or is left out)"]
    assert errors({"order": ["Frontend", "MockerWorker", "Frontend"]}) == [
        "spec.restart.strategy.order: Frontend listed more than once (each service exactly once)"]
    assert errors({"type": "Parallel", "order": ["Frontend", "MockerWorker"]}) == [
        "spec.restart.strategy.order: not allowed with strategy Parallel (every service restarts at once)"]
    assert errors({"type": "Sequential", "order": ["MockerWorker", "Frontend"]}) == []
    assert errors({"type": "Parallel"}) == errors({"type": "Sequential"}) == []


def test_v1beta1_restart_is_rendered_not_dropped(tmp_path):
    doc = yaml.safe_load(BETA.read_text())
    doc["spec"]["restart"] = {"id": "2026-12-07", "strategy": {"type": "Parallel"}}
    report = validate_file(write(tmp_path, doc))
    assert report.ok and not any("spec.restart" in w for w in report.warnings), report.warnings
    for template in templates(render(report.graphs[0])).values():
        assert template["metadata"]["annotations"]["nvidia.com/restartAt"] == "2026-12-07"


def test_graph_topology_constraint_is_accepted_and_ignored_with_a_warning(tmp_path):
    doc = agg_doc()
    doc["spec"]["topologyConstraint"] = {"packDomain": "rack"}
    report = validate_file(write(tmp_path, doc))
    assert report.ok, report.errors
    assert any(w.startswith("spec.topologyConstraint: not supported") for w in report.warnings)


# ----- D5: PodMonitors --------------------------------------------------------------------------------

def test_pod_monitors_select_the_labels_render_sets(tmp_path, capsys):
    objects, _ = render_cli(capsys, str(AGG), "--pod-monitors", "--namespace", "team-a")
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    assert {m["apiVersion"] for m in monitors} == {"monitoring.coreos.com/v1"}
    ports = {m["spec"]["selector"]["matchLabels"]["nvidia.com/dynamo-component-type"]:
             m["spec"]["podMetricsEndpoints"] for m in monitors}
    assert ports == {"frontend": [{"port": "http", "path": "/metrics"}],
                     "worker": [{"port": "system", "path": "/metrics"}]}
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == "team-a"
        selected = [o for o in objects if o["kind"] == "Deployment"
                    and monitor["spec"]["selector"]["matchLabels"].items()
                    <= o["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1  # each monitor selects its component's pods, which name its port
        (container,) = selected[0]["spec"]["template"]["spec"]["containers"]
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in container["ports"]}
    plain, _ = render_cli(capsys, str(AGG))
    assert not any(o["kind"] == "PodMonitor" for o in plain)  # off by default: a CRD the cluster may lack


def test_a_kserve_frontend_is_scraped_on_its_metrics_port(tmp_path, capsys):
    """--kserve-grpc-server puts gRPC on the `http` port: a scrape there would fail; /metrics is on `metrics`."""
    doc = copy.deepcopy(agg_doc())
    doc["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]["args"] = ["--kserve-grpc-server"]
    objects, _ = render_cli(capsys, write(tmp_path, doc), "--pod-monitors")
    (monitor,) = [o for o in objects if o["kind"] == "PodMonitor"
                  and o["spec"]["selector"]["matchLabels"]["nvidia.com/dynamo-component-type"] == "frontend"]
    assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics"}]


def test_no_pod_monitors_for_a_graph_that_opts_out_of_metrics(tmp_path, capsys):
    doc = copy.deepcopy(agg_doc())
    doc["metadata"]["annotations"] = {"nvidia.com/enable-metrics": "false"}
    objects, err = render_cli(capsys, write(tmp_path, doc), "--pod-monitors")
    assert not any(o["kind"] == "PodMonitor" for o in objects) and "no PodMonitors" in err
