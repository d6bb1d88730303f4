"""`validate` on shapes found in NVIDIA's own recipes: operator-only fields of both served
versions are warnings alike, EPP / GAIE components get one clear error, schema errors do not
hide command-line errors, and templates / kustomize patches are recognised as such."""

from __future__ import annotations

import textwrap
from pathlib import Path

import msgspec
import pytest
import yaml

from dynamo.deploy.model import Service
from dynamo.deploy.validate import validate_file

IGNORED = "not supported by `run`/`render`; ignored"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def v1alpha1(services: str, metadata: str = "name: g") -> str:
    """A v1alpha1 DGD whose `spec.services` body is `services` (indented 2)."""
    return (f"apiVersion: nvidia.com/v1alpha1\nkind: DynamoGraphDeployment\nmetadata:\n  {metadata}\nspec:\n"
            f"  services:\n{textwrap.indent(textwrap.dedent(services), '    ')}")


def v1beta1(components: str) -> str:
    return ("apiVersion: nvidia.com/v1beta1\nkind: DynamoGraphDeployment\nmetadata:\n  name: g\nspec:\n"
            f"  components:\n{textwrap.indent(textwrap.dedent(components), '  ')}")


def mocker(name: str, *extra_args: str, image: str = "img:1", fields: str = "") -> str:
    """A v1alpha1 mocker worker service (flags are checked against dynamo.mocker's parser)."""
    args = ", ".join(["--model-path", "/m", *extra_args])
    return (f"{name}:\n  componentType: worker\n{textwrap.indent(textwrap.dedent(fields), '  ')}"
            f"  extraPodSpec:\n    mainContainer:\n      image: {image}\n"
            f"      command: [python3, -m, dynamo.mocker]\n      args: [{args}]\n")


# --- operator-only fields: v1alpha1 as v1beta1 ---------------------------------------------

def test_v1alpha1_operator_fields_warn_like_v1beta1(tmp_path):
    fields = """\
        gpuMemoryService: {enabled: true}
        failover: {enabled: true}
        frontendSidecar: {image: img:1, args: [-m, dynamo.frontend]}
        checkpoint: {enabled: true}
        """
    report = validate_file(write(tmp_path, v1alpha1(mocker("W", fields=fields))))
    assert report.errors == []
    for key in ("gpuMemoryService", "failover", "frontendSidecar", "checkpoint"):
        assert f"spec.services.W.{key}: {IGNORED}" in report.warnings
    beta = v1beta1("""\
        - name: W
          type: worker
          frontendSidecar: sidecar
          experimental: {gpuMemoryService: {enabled: true}}
          podTemplate: {spec: {containers: [{name: main, image: img:1, command: [python3, -m, dynamo.mocker],
                                             args: [--model-path, /m]}]}}
        """)
    report = validate_file(write(tmp_path, beta))
    assert report.errors == []
    assert f"spec.components[0].frontendSidecar: {IGNORED}" in report.warnings


CLAIMS_V1ALPHA1 = """\
    W:
      componentType: worker
      resources:
        limits: {gpu: "4"}
        claims: [{name: compute-domain-channel}]
      extraPodSpec:
        resourceClaims:
          - name: compute-domain-channel
            resourceClaimTemplateName: cd-channel
        mainContainer: {image: img:1, command: [python3, -m, dynamo.mocker], args: [--model-path, /m]}
    """


def test_v1alpha1_pod_resource_claims_are_accepted_and_carried(tmp_path):
    report = validate_file(write(tmp_path, v1alpha1(CLAIMS_V1ALPHA1)))
    assert report.errors == [] and report.warnings == [], report.lines()
    (graph,) = report.graphs
    assert graph.spec.services["W"].extraPodSpec.resourceClaims == [
        {"name": "compute-domain-channel", "resourceClaimTemplateName": "cd-channel"}]


# --- EPP / GAIE --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_epp_component_is_one_clear_error(tmp_path, version):
    if version == "v1alpha1":
        text = v1alpha1("Epp:\n  componentType: epp\n  eppConfig: {config: {plugins: []}}\n"
                        "  extraPodSpec: {mainContainer: {image: epp:1}}\n" + mocker("W"))
        where = "spec.services.Epp"
    else:
        text = v1beta1("- name: Epp\n  type: epp\n  eppConfig: {config: {}}\n"
                       "  podTemplate: {spec: {containers: [{name: main, image: epp:1}]}}\n")
        where = "spec.components[0]"
    report = validate_file(write(tmp_path, text))
    (error,) = report.errors
    assert error.startswith(f"{where}: component Epp is an EPP")
    assert "EPP / GAIE graphs are not supported by `run`/`render`" in error
    assert "give command/args" not in error
    assert f"{where}.eppConfig: {IGNORED}" in report.warnings


# --- schema errors do not hide command-line errors -----------------------------------------

def test_schema_errors_do_not_hide_flag_errors_v1alpha1(tmp_path):
    text = v1alpha1(mocker("A", "--no-such-flag", fields="replica: 2\n")   # a typo beside a bad flag
                    + mocker("B", "--other-bad-flag")
                    + "C:\n  componentType: worker\n  extraPodSpec: {mainContainer: {image: i, args: --x}}\n")
    errors = validate_file(write(tmp_path, text)).errors
    assert "spec.services.A.replica: unknown field" in errors
    assert any(e.startswith("spec.services.A.extraPodSpec.mainContainer.args: service A")
               and "--no-such-flag" in e for e in errors), errors
    assert any("service B" in e and "--other-bad-flag" in e for e in errors), errors
    # C's args are themselves broken: reported once, as the schema error, never parsed.
    assert [e for e in errors if "services.C" in e] == [
        "spec.services.C.extraPodSpec.mainContainer.args: expected list, got str"]


def test_schema_errors_do_not_hide_flag_errors_v1beta1(tmp_path):
    text = v1beta1("""\
        - name: A
          type: worker
          replica: 2
          podTemplate: {spec: {containers: [{name: main, image: i, command: [python3, -m, dynamo.mocker],
                                             args: [--model-path, /m, --no-such-flag]}]}}
        - name: B
          type: worker
          podTemplate: {spec: {containers: [{name: side, image: i}]}}
        """)
    errors = validate_file(write(tmp_path, text)).errors
    assert "spec.components[0].replica: unknown field" in errors
    assert any(e.startswith("spec.components[0].podTemplate.spec.containers[0].args: service A")
               and "--no-such-flag" in e for e in errors), errors
    assert any(e.startswith("spec.components[1].podTemplate.spec.containers: a container named 'main'")
               for e in errors), errors
    assert len(errors) == 3, errors  # B has no main container: nothing more is read from it


# --- templates and kustomize patches ---------------------------------------------------------

def test_placeholders_and_bad_quantities_are_warnings(tmp_path):
    fields = """\
        resources:
          requests: {cpu: 500m, memory: 16Gi, gpu: 1, custom: {REPLACE-RDMA-KEY: "1"}}
          limits: {gpu: "1", custom: {example.com/nic: "1e3"}}
        """
    text = v1alpha1(mocker("A", image="<your-registry>/dynamo:latest", fields=fields)
                    + mocker("B", image="nvcr.io/x/vllm-runtime:${VERSION}", fields="""\
                        resources: {limits: {memory: lots}}
                        """),
                    metadata="name: g\n  namespace: <your-namespace>")
    report = validate_file(write(tmp_path, text))
    assert report.errors == [], report.errors
    warnings = "\n".join(report.warnings)
    assert "metadata.namespace: namespace '<your-namespace>' holds a placeholder" in warnings
    assert "spec.services.A.extraPodSpec.mainContainer.image: image '<your-registry>/dynamo:latest'" in warnings
    assert "spec.services.B.extraPodSpec.mainContainer.image: image 'nvcr.io/x/vllm-runtime:${VERSION}'" in warnings
    assert ("spec.services.A.resources.requests.custom.REPLACE-RDMA-KEY: resource name 'REPLACE-RDMA-KEY' holds a "
            "placeholder") in warnings
    assert "spec.services.B.resources.limits.memory: 'lots' is not a Kubernetes quantity" in warnings
    assert len(report.warnings) == 5, report.warnings  # 500m, 16Gi, 1, "1e3" are quantities


def test_container_resource_placeholders_warn(tmp_path):
    text = v1beta1("""\
        - name: W
          type: worker
          podTemplate: {spec: {containers: [{name: main, image: REPLACE-IMAGE, command: [python3, -m, dynamo.mocker],
                                             args: [--model-path, /m],
                                             resources: {limits: {"${RDMA}": "1", nvidia.com/gpu: REPLACE-COUNT}}}]}}
        """)
    report = validate_file(write(tmp_path, text))
    assert report.errors == []
    main = "spec.components[0].podTemplate.spec.containers[0]"
    assert [w.split(":")[0] for w in report.warnings] == [
        f"{main}.image", f"{main}.resources.limits.${{RDMA}}", f"{main}.resources.limits.nvidia.com/gpu"]


def test_placeholder_claim_and_secret_names_warn(tmp_path):
    # A pod mounting a PVC or secret that does not exist waits in Pending with no word of why.
    text = v1alpha1("""\
        A:
          componentType: worker
          envFromSecret: ${HF_SECRET}
          extraPodSpec:
            volumes: [{name: m, persistentVolumeClaim: {claimName: REPLACE-ME}}, {name: t, secret: {secretName: tok}}]
            mainContainer: {image: img:1, command: [python3, -m, dynamo.mocker], args: [--model-path, /m]}
        """) + '  pvcs: [{name: "<YOUR-PVC>", create: false}]\n'
    report = validate_file(write(tmp_path, text))
    assert report.errors == [], report.errors
    assert sorted(w.split(":")[0] for w in report.warnings) == [
        "spec.pvcs[0].name", "spec.services.A.envFromSecret",
        "spec.services.A.extraPodSpec.volumes[0].persistentVolumeClaim.claimName"]


def test_kustomize_patch_gets_a_hint(tmp_path):
    patch = v1beta1("""\
        - name: Frontend
        - name: Worker
          podTemplate:
            spec:
              containers:
                - name: main
                  env: [{name: MC_FORCE_TCP, $patch: delete}]
        """)
    errors = validate_file(write(tmp_path, patch)).errors
    assert "looks like a kustomize patch" in errors[0] and "run `kustomize build` first" in errors[0]
    assert any(e.endswith("env[0].$patch: unknown field") for e in errors), errors
    assert not any("no command" in e or "image: required" in e for e in errors), errors  # kustomize fills them
    whole_but_broken = yaml.safe_load(patch)
    whole_but_broken["spec"]["components"][0]["type"] = "frontend"
    del whole_but_broken["spec"]["components"][1]["podTemplate"]["spec"]["containers"][0]["env"][0]["$patch"]
    errors = validate_file(write(tmp_path, yaml.safe_dump(whole_but_broken))).errors
    assert errors and not any("kustomize" in e for e in errors), errors


def test_unfilled_gpu_count_is_a_clear_error_for_run():
    svc = msgspec.convert({"resources": {"limits": {"gpu": "REPLACE-COUNT"}}}, Service)
    with pytest.raises(ValueError, match="GPU count 'REPLACE-COUNT' is not a whole number"):
        svc.gpus()
