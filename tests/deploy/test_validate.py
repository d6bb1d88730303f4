"""`validate`: every example passes; broken manifests fail naming the service and field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynamo.deploy.dynamo_model import load_models
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

EXAMPLES = sorted((REPO / "examples/backends").glob("*/deploy/*.yaml"))
BASE = REPO / "examples/backends/mocker/deploy/disagg.yaml"


def test_examples_exist_for_every_backend_and_variant():
    names = {(p.parts[-3], p.stem) for p in EXAMPLES}
    for backend in ("mocker", "vllm", "sglang", "trtllm"):
        for variant in ("agg", "agg_router", "disagg", "disagg_router"):
            assert (backend, variant) in names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_every_example_validates(path):
    report = validate_file(path)
    assert report.errors == []
    assert len(report.graphs) == 1
    assert report.warnings == []  # every worker module is provided and its flags are checked


def broken(tmp_path: Path, mutate) -> list[str]:
    doc = yaml.safe_load(BASE.read_text())
    mutate(doc)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(doc))
    report = validate_file(path)
    assert not report.ok
    return report.errors


def svc(doc, name="MockerDecodeWorker"):
    return doc["spec"]["services"][name]


def main_container(doc, name="MockerDecodeWorker"):
    return svc(doc, name)["extraPodSpec"]["mainContainer"]


def test_wrong_types_name_their_path(tmp_path):
    def mutate(doc):
        svc(doc)["replicas"] = "two"
        svc(doc)["envs"] = {"DYN_LOG": "debug"}
        svc(doc, "MockerPrefillWorker")["subComponentType"] = "middle"
        main_container(doc)["args"] = "--is-decode-worker"
    errors = broken(tmp_path, mutate)
    assert "spec.services.MockerDecodeWorker.replicas: expected int, got str" in errors
    assert "spec.services.MockerDecodeWorker.envs: expected list, got object" in errors
    assert any(e.startswith("spec.services.MockerPrefillWorker.subComponentType: expected one of") for e in errors)
    assert "spec.services.MockerDecodeWorker.extraPodSpec.mainContainer.args: expected list, got str" in errors


def test_bool_is_not_an_int_and_negative_replicas_fail(tmp_path):
    errors = broken(tmp_path, lambda d: svc(d).update(replicas=True))
    assert "spec.services.MockerDecodeWorker.replicas: expected int, got bool" in errors
    errors = broken(tmp_path, lambda d: svc(d).update(replicas=-1))
    assert "spec.services.MockerDecodeWorker.replicas: must be >= 0, got -1" in errors


def test_unknown_fields_are_reported(tmp_path):
    def mutate(doc):
        svc(doc)["replica"] = 2
        main_container(doc)["workdir"] = "/tmp"
        doc["spec"]["extra"] = 1
    errors = broken(tmp_path, mutate)
    assert "spec.services.MockerDecodeWorker.replica: unknown field" in errors
    assert "spec.services.MockerDecodeWorker.extraPodSpec.mainContainer.workdir: unknown field" in errors
    assert "spec.extra: unknown field" in errors


def test_unknown_flag_names_service_and_flag(tmp_path):
    errors = broken(tmp_path, lambda d: main_container(d)["args"].append("--no-such-flag"))
    assert any("service MockerDecodeWorker" in e and "unknown flag --no-such-flag" in e for e in errors), errors


def test_unknown_flag_in_shell_form(tmp_path):
    def mutate(doc):
        main_container(doc, "Frontend").update(
            command=["/bin/sh", "-c"], args=["python3 -m dynamo.frontend --http-port 8000 --bogus 1 2>&1 | tee /tmp/x"])
    errors = broken(tmp_path, mutate)
    assert any("service Frontend" in e and "unknown flag --bogus" in e for e in errors), errors


def test_bad_flag_value_and_missing_image(tmp_path):
    def mutate(doc):
        main_container(doc)["args"] += ["--block-size", "big"]
        del main_container(doc, "MockerPrefillWorker")["image"]
    errors = broken(tmp_path, mutate)
    assert any("service MockerDecodeWorker" in e and "--block-size" in e for e in errors), errors
    assert any("MockerPrefillWorker.extraPodSpec.mainContainer.image: required" in e for e in errors), errors


def test_wrong_kind_and_missing_name(tmp_path):
    def mutate(doc):
        doc["apiVersion"] = "nvidia.com/v2"
        del doc["metadata"]["name"]
    errors = broken(tmp_path, mutate)
    assert "metadata.name: required field missing" in errors
    assert any(e.startswith("apiVersion: expected 'nvidia.com/v1alpha1'") for e in errors)


def test_unloadable_parser_is_a_warning_not_an_error(tmp_path, monkeypatch):
    from dynamo.deploy import parsers

    monkeypatch.setitem(parsers._PARSERS, "dynamo.mocker", "dynamo.mocker.no_such_module:build_parser")
    report = validate_file(BASE)
    assert report.ok
    assert any("flags of dynamo.mocker not checked" in w for w in report.warnings)


@pytest.mark.e2e  # runs the CLI as a process
def test_cli_exit_codes(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE.read_text().replace("replicas: 1", "replicas: one", 1))
    def run(*files) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dynamo.deploy", "validate", *map(str, files)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)

    ok = run(*EXAMPLES[:4])
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = run(BASE, bad)
    assert failed.returncode == 1
    assert "replicas: expected int, got str" in failed.stdout
    strict = subprocess.run([sys.executable, "-m", "dynamo.deploy", "validate", "--strict",
                             str(REPO / "examples/backends/sglang/deploy/agg.yaml")], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert strict.returncode == 0, strict.stdout + strict.stderr


@pytest.mark.parametrize("backend, bad_flag", [("sglang", "--page-sise"), ("trtllm", "--kv-blocksize")])
def test_sglang_and_trtllm_flags_are_checked(backend, bad_flag, tmp_path):
    text = (REPO / f"examples/backends/{backend}/deploy/agg.yaml").read_text()
    doc = yaml.safe_load(text)
    worker = next(s for s in doc["spec"]["services"].values()
                  if f"dynamo.{backend}" in " ".join(map(str, s["extraPodSpec"]["mainContainer"]["command"])))
    worker["extraPodSpec"]["mainContainer"]["args"] = [*worker["extraPodSpec"]["mainContainer"]["args"], bad_flag, "1"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    report = validate_file(path)
    assert any(bad_flag in e for e in report.errors), report.errors


PLANNER_EXAMPLE = REPO / "examples/backends/mocker/deploy/disagg_planner.yaml"


@pytest.mark.parametrize("config, message", [
    ({"plannerMaxGpuBudget": 4}, "unknown field `plannerMaxGpuBudget`"),
    ({"max_gpu_budget": "four"}, "max_gpu_budget"),
    ({"optimization_target": "load"}, "needs prefill_scale_"),
    ({"fpm_sample_bucket_size": 10}, "perfect square"),
    ({"environment": "global-planner"}, "needs global_planner_namespace"),
])
def test_a_planner_config_the_planner_would_refuse_is_an_error(tmp_path, config, message):
    # The planner reads its --config at start and stops on what it cannot take: the pod would crash-loop.
    doc = yaml.safe_load(PLANNER_EXAMPLE.read_text())
    args = main_container(doc, "Planner")["args"]
    at = args.index("--config") + 1
    args[at] = json.dumps({**json.loads(args[at]), **config})
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(doc))
    errors = validate_file(path).errors
    assert any("service Planner" in e and "refuses this config" in e and message in e for e in errors), errors


def test_a_planner_config_read_where_it_runs_is_not_judged_here(tmp_path):
    doc = yaml.safe_load(PLANNER_EXAMPLE.read_text())
    args = main_container(doc, "Planner")["args"]
    args[args.index("--config") + 1] = "/workspace/planner_config/planner_config.json"  # a ConfigMap mount
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert validate_file(path).ok


@pytest.mark.parametrize("items, subpath", [(None, None), ([{"key": "other.json", "path": "other.json"}], None),
                                            (None, "planner.json")], ids=["whole", "items", "subPath"])
def test_a_config_path_under_a_configmap_mount_that_the_configmap_lacks_is_an_error(tmp_path, items, subpath):
    # The pod would see no file at --config: the planner stops at start (a crash-looping pod).
    doc = yaml.safe_load(PLANNER_EXAMPLE.read_text())
    planner = svc(doc, "Planner")
    mount = "/workspace/planner_config" + (f"/{subpath}" if subpath else "")
    main_container(doc, "Planner")["args"] = ["--config", "/workspace/planner_config/planner.json"]
    source = {"name": "planner-config-ab12", **({"items": items} if items else {})}
    planner["extraPodSpec"]["volumes"] = [{"name": "cfg", "configMap": source}]
    main_container(doc, "Planner")["volumeMounts"] = [{"name": "cfg", "mountPath": mount,
                                                       **({"subPath": subpath} if subpath else {})}]
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planner-config-ab12"},
                  "data": {"planner_config.json": "{}", "other.json": "{}"}}
    path = tmp_path / "planner.yaml"
    path.write_text(yaml.safe_dump_all([config_map, doc]))
    errors = validate_file(path).errors
    assert len(errors) == 1 and errors[0].startswith(
        "graph mocker-disagg-planner, service Planner: planner config /workspace/planner_config/planner.json: ConfigMap "
        "planner-config-ab12 (mounted at /workspace/planner_config"), errors
    assert "has no key" in errors[0] and "the pod finds no file there" in errors[0], errors


def test_a_misspelt_kind_is_named(tmp_path):
    path = tmp_path / "misspelt.yaml"
    path.write_text(BASE.read_text().replace("kind: DynamoGraphDeployment\n", "kind: DynamoGraphDeploymnt\n", 1))
    assert validate_file(path).errors == [
        "no DynamoGraphDeployment document found (the file has kind 'DynamoGraphDeploymnt'; is kind "
        "'DynamoGraphDeploymnt' a misspelling of DynamoGraphDeployment?)"]


LORA = REPO / "examples/backends/mocker/deploy/agg_lora.yaml"


@pytest.mark.parametrize("spec, message", [
    ({"baseModelName": "nope"}, "DynamoModel tiny-lora: no service of mocker-agg-lora has modelRef.name 'nope'"),
    ({"source": {}}, "missing required field `uri`"),
    ({"source": {"uri": ""}}, "DynamoModel tiny-lora: spec.source.uri is required for modelType lora"),
])
def test_a_dynamo_model_that_run_and_render_refuse_is_an_error(tmp_path, spec, message):
    docs = list(yaml.safe_load_all(LORA.read_text()))
    docs[1]["spec"].update(spec)
    path = tmp_path / "lora.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    report = validate_file(path)
    assert [e for e in report.errors if message in e], report.errors
    with pytest.raises(ValueError) as refused:  # the one check `run` and `render` make
        load_models(list(yaml.safe_load_all(path.read_text())), report.graphs[0])
    assert str(refused.value) in report.errors


def test_a_sidecar_container_is_said_to_run_only_under_kubernetes(tmp_path):
    doc = yaml.safe_load(BASE.read_text())
    svc = next(s for s in doc["spec"]["services"].values() if s.get("componentType") != "frontend")
    svc.setdefault("extraPodSpec", {})["containers"] = [{"name": "log-shipper", "image": "fluent-bit:3"}]
    path = tmp_path / "sidecar.yaml"
    path.write_text(yaml.safe_dump(doc))
    report = validate_file(path)
    assert report.ok and any("sidecar container(s) log-shipper run under Kubernetes" in w for w in report.warnings), \
        report.warnings
