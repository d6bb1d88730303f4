"""`run`'s options over a file of several graphs: `--set` / `--append-args` name SERVICE (every graph that
has it) or GRAPH/SERVICE; a name no graph has is refused; the first graph with a frontend gets
--frontend-port; each graph gets its own pods directory and the file's ConfigMaps."""

from __future__ import annotations

import argparse

import pytest

from dynamo.deploy.run import build_runs
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

EXAMPLE = REPO / "examples/global_router/hierarchical_mocker.yaml"
# The file names a Hugging Face id that no test machine caches (and `run` refuses a model it cannot get).
TINY = str(REPO / "tests/fixtures/tiny-model")


def args(**given) -> argparse.Namespace:
    base = dict(file=str(EXAMPLE), overrides=[], append_args=[], volumes=[], model=TINY, namespace="demo",
                frontend_port=8123, prometheus_endpoint=None, log_dir=None, grace=1.0, control_port=0)
    return argparse.Namespace(**{**base, **given})


def runs_for(tmp_path, **given):
    return {run.graph.metadata.name: run for run in build_runs(args(**given), validate_file(EXAMPLE).graphs,
                                                                str(tmp_path / "state"), str(tmp_path / "pods"))}


def test_service_names_reach_every_graph_or_the_one_named(tmp_path):
    runs = runs_for(tmp_path, overrides=["LocalRouter.replicas=2", "gr-prefill-fast/MockerPrefill.replicas=3"],
                    append_args=["gr-decode/MockerDecode=--speedup-ratio 50"])
    assert all(run.sup.plans["LocalRouter"].replicas == 2 for name, run in runs.items() if name != "gr-ctrl")
    assert runs["gr-prefill-fast"].sup.plans["MockerPrefill"].replicas == 3
    assert runs["gr-prefill-bulk"].sup.plans["MockerPrefill"].replicas == 2  # the manifest's
    assert runs["gr-decode"].opts.append_args == {"MockerDecode": ["--speedup-ratio", "50"]}
    assert runs["gr-prefill-bulk"].opts.append_args == {}
    assert runs["gr-ctrl"].opts.frontend_port == 8123
    assert len({run.opts.pods_dir for run in runs.values()}) == 4
    assert all("gr-global-router-config" in run.opts.config_maps for run in runs.values())


@pytest.mark.parametrize("given", [{"overrides": ["Nope.replicas=1"]}, {"append_args": ["gr-ctrl/LocalRouter=-x"]},
                                   {"overrides": ["gr-decode/Nope.replicas=1"]}])
def test_a_service_no_graph_has_is_refused(tmp_path, given):
    with pytest.raises(ValueError, match="no service"):
        runs_for(tmp_path, **given)


def test_a_scaled_down_replica_gets_its_pods_termination_grace_not_grace(tmp_path):
    """A replica the supervisor retires (a scale-down) or kills (liveness) is SIGKILLed after its pod's
    terminationGracePeriodSeconds, as the kubelet would: the manifest's, else the operator's 60; `--grace`
    (1 s here) bounds only the whole run's shutdown."""
    sup = runs_for(tmp_path)["gr-decode"].sup
    assert sup.grace == 1.0 and sup.pod_grace("MockerDecode") == 60.0
    sup.plans["MockerDecode"].svc.extraPodSpec.terminationGracePeriodSeconds = 45
    assert sup.pod_grace("MockerDecode") == 45.0
