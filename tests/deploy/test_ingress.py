"""A service's `ingress` under `render`, as Dynamo's operator writes it: an Ingress (host
`{hostPrefix}{host}.{hostSuffix or local}`, path `/` to the service's Service, class, TLS, annotations and
labels) or, with `useVirtualService` and a gateway, an Istio VirtualService; nothing without `enabled`; a typo
in the field is a validation error, not a silently dropped ingress."""

from __future__ import annotations

from typing import Any

import kubernetes_validate as kv
import yaml

from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

AGG = REPO / "examples/backends/mocker/deploy/agg.yaml"


def graph_with(tmp_path, ingress: dict[str, Any], service: str = "Frontend"):
    doc = yaml.safe_load(AGG.read_text())
    doc["spec"]["services"][service]["ingress"] = ingress
    path = tmp_path / "graph.yaml"
    path.write_text(yaml.safe_dump(doc))
    return validate_file(str(path))


def rendered(report) -> tuple[list[dict[str, Any]], list[str]]:
    assert report.ok, report.errors
    warnings: list[str] = []
    (graph,) = report.graphs
    return render(graph, "team-a", warnings=warnings), warnings


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def test_an_enabled_ingress_routes_its_host_to_the_frontend_service(tmp_path):
    objects, warnings = rendered(graph_with(tmp_path, {
        "enabled": True, "host": "chat", "hostPrefix": "eu-", "hostSuffix": "example.com",
        "ingressControllerClassName": "nginx", "tls": {"secretName": "chat-tls"},
        "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}, "labels": {"team": "a"}}))
    (ingress,) = of_kind(objects, "Ingress")
    kv.validate(ingress, kv.latest_version(), strict=True)
    service = next(o for o in of_kind(objects, "Service") if o["metadata"]["name"] == "mocker-agg-frontend")
    assert ingress["metadata"]["name"] == "mocker-agg-frontend" and ingress["metadata"]["namespace"] == "team-a"
    assert ingress["metadata"]["labels"]["team"] == "a"
    assert ingress["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [{"hosts": ["eu-chat.example.com"], "secretName": "chat-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "eu-chat.example.com"
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": "mocker-agg-frontend",
                                          "port": {"number": service["spec"]["ports"][0]["port"]}}
    assert warnings == [] or not any("ingress" in w for w in warnings)


def test_the_operators_defaults_host_from_the_graph_and_suffix_local(tmp_path):
    objects, _ = rendered(graph_with(tmp_path, {"enabled": True}))
    (ingress,) = of_kind(objects, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "mocker-agg.local"
    assert "tls" not in ingress["spec"] and "ingressClassName" not in ingress["spec"]


def test_a_virtual_service_on_its_gateway_instead(tmp_path):
    objects, _ = rendered(graph_with(tmp_path, {"enabled": True, "host": "chat", "useVirtualService": True,
                                                "virtualServiceGateway": "istio-system/public"}))
    assert of_kind(objects, "Ingress") == []
    (vs,) = of_kind(objects, "VirtualService")
    assert vs["apiVersion"] == "networking.istio.io/v1beta1"
    assert vs["spec"]["hosts"] == ["chat.local"] and vs["spec"]["gateways"] == ["istio-system/public"]
    assert vs["spec"]["http"][0]["route"][0]["destination"] == {"host": "mocker-agg-frontend",
                                                                "port": {"number": 8000}}


def test_a_virtual_service_without_a_gateway_is_said_and_not_written(tmp_path):
    objects, warnings = rendered(graph_with(tmp_path, {"enabled": True, "useVirtualService": True}))
    assert of_kind(objects, "VirtualService") == of_kind(objects, "Ingress") == []
    assert any("without ingress.virtualServiceGateway" in w for w in warnings), warnings


def test_disabled_writes_nothing_and_a_worker_ingress_is_said(tmp_path):
    objects, _ = rendered(graph_with(tmp_path, {"enabled": False, "host": "chat"}))
    assert of_kind(objects, "Ingress") == []
    objects, warnings = rendered(graph_with(tmp_path, {"enabled": True}, service="MockerWorker"))
    assert len(of_kind(objects, "Ingress")) == 1
    assert any("ingress on a worker, not a frontend" in w for w in warnings), warnings


def test_a_misspelled_field_is_an_error(tmp_path):
    report = graph_with(tmp_path, {"enabled": True, "hostname": "chat"})
    assert not report.ok and any("ingress" in e and "hostname" in e for e in report.errors), report.errors
