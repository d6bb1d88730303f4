"""DGDR v1alpha1 (the pre-1.0 form): read as Dynamo 1.6's operator converts it to v1beta1, the keys
with a home here honoured, every other key named; the planner settings of the day renamed to
PlannerConfig's; a planner config the planner would refuse is refused before any profiling."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import yaml

from dynamo.profiler import dgdr, dgdr_v1alpha1
from dynamo.profiler.__main__ import ProfilerArgs, with_request_settings
from dynamo.profiler.pipeline import Options, check_request, load_request, run
from tests.fixtures.procs import REPO

EXAMPLES = REPO / "examples/profiler"


def alpha(spec: dict, **meta) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeploymentRequest",
            "metadata": {"name": "old", **meta}, "spec": {"model": "Qwen/Qwen3-0.6B", "backend": "vllm", **spec}}


def test_the_mapping_of_dynamos_conversion():
    req = dgdr.parse(alpha({"useMocker": True, "profilingConfig": {
        "profilerImage": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.7.0",
        "resources": {"limits": {"cpu": "4"}}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "config": {"sla": {"isl": 3000, "osl": 150, "ttft": 200, "itl": 20, "optimizationType": "latency"},
                   "deployment": {"modelCache": {"pvcName": "models", "modelPathInPvc": "qwen",
                                                 "pvcMountPath": "/models"}},
                   "planner": {"max_gpu_budget": 4}}}}))
    s = req.spec
    assert (req.apiVersion, s.model, s.backend, s.mocker) == ("nvidia.com/v1beta1", "Qwen/Qwen3-0.6B", "vllm", True)
    assert s.autoApply is False  # v1alpha1's default (v1beta1's is true)
    assert s.image == "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.7.0"
    assert (s.sla.ttft, s.sla.itl, s.sla.optimizationType) == (200.0, 20.0, "latency")
    assert (s.workload.isl, s.workload.osl) == (3000, 150)
    assert (s.modelCache.pvcName, s.modelCache.pvcModelPath, s.modelCache.pvcMountPath) == ("models", "qwen", "/models")
    assert s.features.planner == {"optimization_target": "sla", "enable_load_scaling": False, "max_gpu_budget": 4}
    job = s.overrides.profilingJob["template"]["spec"]
    assert job["containers"][0]["resources"] == {"limits": {"cpu": "4"}} and job["tolerations"][0]["operator"] == "Exists"
    kept = json.loads(req.metadata.annotations[dgdr_v1alpha1.CONFIG_ANNOTATION])
    assert kept["sla"]["isl"] == 3000  # the whole config, where Dynamo keeps it


def test_keys_with_a_home_here_are_honoured_and_the_rest_named(caplog):
    raw = alpha({"profilingConfig": {"configMapRef": {"name": "base"}, "config": {
        "sla": {"ttft": 300},
        "hardware": {"numGpusPerNode": 4, "maxNumGpusPerEngine": 8, "minNumGpusPerEngine": 2},
        "sweep": {"use_ai_configurator": False, "aicSystem": "H100_SXM", "pickWithWebui": True},
        "engine": {"config": "/workspace/disagg.yaml", "maxContextLength": 8192},
        "deployment": {"modelCache": {"pvcName": "m", "pvcPath": "qwen", "mountPath": "/cache"}},
        "outputDir": "/data/out"}}, "deploymentOverrides": {"name": "qwen-dgd", "labels": {"team": "a"},
                                                            "workersImage": "img:1"}})
    with caplog.at_level(logging.WARNING, logger="dynamo.profiler"):
        req = dgdr.parse(raw)
    s = req.spec
    assert s.searchStrategy == "thorough"  # useAiConfigurator: false asked for online profiling
    assert (s.hardware.gpuSku, s.hardware.numGpusPerNode) == ("h100_sxm", 4)
    assert (s.sla.ttft, s.sla.itl) == (300.0, 10.0)  # the pre-1.0 profiler's ITL default
    assert (s.modelCache.pvcModelPath, s.modelCache.pvcMountPath) == ("qwen", "/cache")  # its older spellings
    assert s.overrides.dgd == {"metadata": {"name": "qwen-dgd", "labels": {"team": "a"}}}
    assert s.image == "img:1"
    warned = caplog.text
    for key in ("sweep.pickWithWebui", "engine.config", "outputDir", "configMapRef", "sla.itl: not given"):
        assert key in warned, key
    assert "sweep.aicSystem" not in warned and "hardware.numGpusPerNode" not in warned
    settings = dgdr_v1alpha1.profiler_settings(req.metadata.annotations)
    assert settings == {"max_context_length": 8192, "tp_sizes": [2, 4, 8]}


def test_without_use_ai_configurator_the_search_is_rapid_as_dynamo_converts_it(caplog):
    with caplog.at_level(logging.WARNING, logger="dynamo.profiler"):
        req = dgdr.parse(alpha({"profilingConfig": {"config": {"sla": {"isl": 100}}}}))
    assert req.spec.searchStrategy == "rapid" and "useAiConfigurator: not given" in caplog.text
    assert dgdr.parse(alpha({"profilingConfig": {"config": {"sweep": {"useAiConfigurator": True}}}})
                      ).spec.searchStrategy == "rapid"


def test_pre_1_0_planner_settings_become_planner_config_fields():
    notes: list[str] = []
    config = dgdr_v1alpha1.planner_config({"plannerMinEndpoint": 2, "adjustment-interval": 60, "noOperation": True,
                                           "ttft": 200, "disableThroughputScaling": True, "noCorrection": True,
                                           "loadbased_adjustment_interval": 5, "max_gpu_budget": 8}, notes)
    assert config == {"optimization_target": "sla", "enable_load_scaling": False, "min_endpoint": 2,
                      "throughput_adjustment_interval_seconds": 60, "advisory": True, "ttft_ms": 200,
                      "enable_throughput_scaling": False, "load_adjustment_interval_seconds": 5, "max_gpu_budget": 8}
    for key in ("enableThroughputScaling", "enable_throughput_scaling", "plannerEnableThroughputScaling"):
        assert dgdr_v1alpha1.planner_config({key: True}, [])["enable_throughput_scaling"] is True, key
    assert dgdr_v1alpha1.planner_config({"disable-throughput-scaling": False}, [])["enable_throughput_scaling"] is True
    # the pre-1.0 planner's load loop, where it was asked for
    assert dgdr_v1alpha1.planner_config({"enableLoadbasedScaling": True}, [])["enable_load_scaling"] is True
    assert notes == ["profilingConfig.config.planner.noCorrection: the planner has no such setting now; left out"]


@pytest.mark.parametrize("spec, message", [
    ({"modelName": "x"}, "unknown spec field"),
    ({"profilingConfig": {"config": "sla: 1"}}, "config: expected an object"),
    ({"profilingConfig": {"config": {"sweep": {"aicSystem": "b60"}}}}, "spec.hardware.gpuSku"),
])
def test_bad_v1alpha1_requests_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        dgdr.parse(alpha(spec))


def test_the_examples_say_the_same_thing_in_both_versions():
    new, old = (load_request(EXAMPLES / name) for name in ("dgdr_mocker.yaml", "dgdr_v1alpha1.yaml"))
    for part in ("model", "backend", "searchStrategy", "autoApply", "workload", "sla"):
        assert getattr(old.spec, part) == getattr(new.spec, part), part
    assert old.spec.mocker and new.spec.mocker
    assert old.spec.features.planner == {"optimization_target": "sla", "enable_load_scaling": False,
                                         "min_endpoint": 1, "max_gpu_budget": 4}


def test_flags_win_over_the_requests_sweep_settings():
    req = load_request(EXAMPLES / "dgdr_v1alpha1.yaml")
    args = with_request_settings(ProfilerArgs(), req)
    assert (args.prefill_interpolation_granularity, args.decode_interpolation_granularity) == (8, 4)
    args = with_request_settings(ProfilerArgs(prefill_interpolation_granularity=20), req)
    assert (args.prefill_interpolation_granularity, args.decode_interpolation_granularity) == (20, 4)


def test_a_planner_config_the_planner_would_refuse_stops_the_request_before_profiling(tmp_path, caplog):
    doc = yaml.safe_load((EXAMPLES / "dgdr_mocker.yaml").read_text())
    doc["spec"]["features"]["planner"]["plannerMaxGpuBudget"] = 4  # a pre-1.0 name in a v1beta1 request
    req = dgdr.parse(doc)
    with caplog.at_level(logging.ERROR, logger="dynamo.profiler"):
        rc = asyncio.run(run(req, Options(output_dir=tmp_path / "out")))
    assert rc == 2
    assert "spec.features.planner" in caplog.text and "plannerMaxGpuBudget" in caplog.text
    assert not (tmp_path / "out").exists()  # nothing profiled, no status: refused as a webhook would


def test_deploy_validate_checks_a_dgdr_as_admission_does(tmp_path, capsys):
    from dynamo.deploy.validate import main as validate_main

    old = yaml.safe_load((EXAMPLES / "dgdr_v1alpha1.yaml").read_text())
    old["spec"]["profilingConfig"]["config"]["sweep"]["webuiPort"] = 8080
    old["spec"]["profilingConfig"]["config"]["planner"]["maxGpuBudget"] = "four"
    bad = tmp_path / "dgdr.yaml"
    bad.write_text(yaml.safe_dump(old))
    assert validate_main([str(bad), str(EXAMPLES / "dgdr_mocker.yaml")]) == 1
    out = capsys.readouterr().out
    assert ("dgdr.yaml: error: spec.profilingConfig.config.planner.maxGpuBudget: Expected `int`, got `str` - at "
            "`$.maxGpuBudget`") in out  # the key as written
    assert "dgdr.yaml: warning: nvidia.com/v1alpha1: profilingConfig.config.sweep.webuiPort: not used here" in out
    assert "dgdr_mocker.yaml: ok" in out
    bad.write_text(yaml.safe_dump({"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest",
                                   "metadata": {"name": "x"}, "spec": {"model": "m", "sla": {"ttft": 5}}}))
    assert validate_main([str(bad)]) == 1
    assert "error: spec.sla: ttft and itl must be given together" in capsys.readouterr().out


@pytest.mark.parametrize("config, message", [
    ({"sla": {"ttft": "800ms", "itl": 20}}, r"sla.ttft: expected a number .* got '800ms'"),
    ({"sla": ["isl", 3000]}, "config.sla: expected an object"),
    ({"planner": "min_endpoint=2"}, "config.planner: expected an object"),
])
def test_malformed_v1alpha1_configs_name_their_path(config, message):
    with pytest.raises(ValueError, match=message):
        dgdr.parse(alpha({"profilingConfig": {"config": config}}))


def test_the_callers_document_is_not_changed():
    raw = alpha({"profilingConfig": {"config": {"sla": {"isl": 10}}}}, annotations={"team": "a"})
    dgdr.parse(raw)
    assert raw["metadata"]["annotations"] == {"team": "a"}


@pytest.mark.parametrize("planner, error", [
    ({"fooBar": 1}, "spec.profilingConfig.config.planner.fooBar: unknown field `fooBar`"),
    ({"adjustmentInterval": "abc"},
     "spec.profilingConfig.config.planner.adjustmentInterval: Expected `float`, got `str` - at `$.adjustmentInterval`"),
    ({"planner-min-endpoint": "x"}, "spec.profilingConfig.config.planner.planner-min-endpoint: Expected `int`"),
])
def test_a_v1alpha1_planner_error_names_the_key_as_the_user_wrote_it(tmp_path, caplog, planner, error):
    old = yaml.safe_load((EXAMPLES / "dgdr_v1alpha1.yaml").read_text())
    old["spec"]["profilingConfig"]["config"]["planner"] = planner
    path = tmp_path / "dgdr.yaml"
    path.write_text(yaml.safe_dump(old))
    errors, _ = check_request(path)
    assert len(errors) == 1 and errors[0].startswith(error), errors
    with caplog.at_level(logging.ERROR, logger="dynamo.profiler"):
        assert asyncio.run(run(load_request(path), Options(output_dir=tmp_path / "out"))) == 2
    assert error in caplog.text


@pytest.mark.parametrize("annotation", ["not json", "[1, 2]", '"planner"'])
def test_a_hand_written_config_annotation_that_is_no_json_object_is_no_config(tmp_path, capsys, annotation):
    """`nvidia.com/dgdr-profiling-config` written by hand (not Dynamo's conversion): read as no config, so a bad
    planner key is reported at spec.features.planner, never a traceback."""
    from dynamo.deploy.validate import main as validate_main

    doc = yaml.safe_load((EXAMPLES / "dgdr_mocker.yaml").read_text())
    doc["metadata"]["annotations"] = {dgdr_v1alpha1.CONFIG_ANNOTATION: annotation}
    doc["spec"]["features"]["planner"]["plannerMaxGpuBudget"] = 4
    path = tmp_path / "dgdr.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert validate_main([str(path)]) == 1
    assert "spec.features.planner" in capsys.readouterr().out
    assert dgdr_v1alpha1.profiler_settings({dgdr_v1alpha1.CONFIG_ANNOTATION: annotation}) == {}
