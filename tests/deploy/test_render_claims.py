"""DRA resource claims (GB200/GB300 recipes' ComputeDomain channel): `render` carries the pod's
`resourceClaims` and the main container's `resources.claims` into valid Kubernetes objects, from
either served version, with a warning naming what it does not emit; `run` plans ignore them."""

from __future__ import annotations

import textwrap

import yaml

from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.render import render
from dynamo.deploy.validate import validate_file
from tests.deploy.test_validate_recipes import CLAIMS_V1ALPHA1, v1alpha1

POD_CLAIM = {"name": "compute-domain-channel", "resourceClaimTemplateName": "cd-channel"}

V1BETA1 = """\
    apiVersion: nvidia.com/v1beta1
    kind: DynamoGraphDeployment
    metadata: {name: claims}
    spec:
      components:
      - name: Frontend
        type: frontend
        podTemplate: {spec: {containers: [{name: main, image: img:1}]}}
      - name: worker
        type: worker
        podTemplate:
          spec:
            resourceClaims:
            - {name: compute-domain-channel, resourceClaimTemplateName: cd-channel}
            containers:
            - name: main
              image: img:1
              command: [python3, -m, dynamo.mocker]
              args: [--model-path, /m]
              resources:
                claims: [{name: compute-domain-channel}]
                limits: {nvidia.com/gpu: "4"}
    """


def rendered_worker(tmp_path, text: str) -> tuple[dict, list[str]]:
    path = tmp_path / "graph.yaml"
    path.write_text(textwrap.dedent(text))
    report = validate_file(path)
    assert report.errors == [], report.errors
    (graph,) = report.graphs
    warnings: list[str] = []
    objects = render(graph, "team-a", include_etcd=True, warnings=warnings)
    _schema_valid(objects)
    worker = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-w"))
    return worker["spec"]["template"]["spec"], warnings


def _schema_valid(objects: list[dict]) -> None:
    import kubernetes_validate as kv  # the `test` extra, as in test_render.py

    for obj in objects:
        kv.validate(obj, kv.latest_version(), strict=True)


def test_v1beta1_container_claims_render(tmp_path):
    pod, warnings = rendered_worker(tmp_path, V1BETA1.replace("- name: worker", "- name: w"))
    assert pod["resourceClaims"] == [POD_CLAIM]
    resources = pod["containers"][0]["resources"]
    assert resources == {"limits": {"nvidia.com/gpu": "4"}, "claims": [{"name": "compute-domain-channel"}]}
    assert any(w.startswith("service w: resourceClaims rendered as written") for w in warnings), warnings


def test_v1alpha1_service_claims_go_on_the_main_container(tmp_path):
    text = v1alpha1(CLAIMS_V1ALPHA1.replace("W:", "w:") + "Frontend: {componentType: frontend, extraPodSpec: "
                    "{mainContainer: {image: img:1}}}\n")
    pod, _ = rendered_worker(tmp_path, text)
    assert pod["resourceClaims"] == [POD_CLAIM]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "4"},
                                                 "claims": [{"name": "compute-domain-channel"}]}


def test_claim_given_twice_is_rendered_once(tmp_path):
    doc = yaml.safe_load(textwrap.dedent(V1BETA1.replace("- name: worker", "- name: w")))
    doc["apiVersion"] = "nvidia.com/v1alpha1"  # same pod, both places a v1alpha1 file can name the claim
    beta_worker = doc["spec"].pop("components")[1]["podTemplate"]["spec"]
    main = beta_worker["containers"][0]
    del main["name"]
    doc["spec"]["services"] = {"w": {"componentType": "worker", "resources": {"claims": [{"name": "compute-domain-channel"}]},
                                     "extraPodSpec": {"resourceClaims": beta_worker["resourceClaims"],
                                                      "mainContainer": main}}}
    pod, _ = rendered_worker(tmp_path, yaml.safe_dump(doc))
    assert pod["containers"][0]["resources"]["claims"] == [{"name": "compute-domain-channel"}]


def test_run_plans_read_gpus_past_the_claims(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    path = tmp_path / "graph.yaml"
    path.write_text(v1alpha1(CLAIMS_V1ALPHA1.replace("/m]", f"{model}]")))
    (graph,) = validate_file(path).graphs
    plans = build_plans(graph, RunOptions(state_dir=str(tmp_path)), {}, devices=["0", "1", "2", "3", "4"])
    assert plans["W"].gpu_slice(0) == ["0", "1", "2", "3"]
