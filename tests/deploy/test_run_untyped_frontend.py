"""A service that runs `dynamo.frontend` without `componentType`: the operator goes by componentType alone, so it
deploys it as a worker (no HTTP Service, probed on a system port a frontend does not serve). `validate` says so in
its warning; `run` refuses it before starting anything (exit 2) instead of letting it bind port 8000 behind
--frontend-port's back and stay `starting` forever."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from dynamo.deploy import contract
from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

AGG = REPO / "examples/backends/mocker/deploy/agg.yaml"


def untyped(tmp_path) -> str:
    docs = list(yaml.safe_load_all(AGG.read_text()))
    del docs[0]["spec"]["services"]["Frontend"]["componentType"]
    docs[0]["spec"]["services"]["Frontend"]["extraPodSpec"]["mainContainer"]["command"] = \
        ["python3", "-m", "dynamo.frontend"]
    path = tmp_path / "untyped.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def test_validate_warns_and_run_plans_refuse_it(tmp_path, tiny_model):
    report = validate_file(untyped(tmp_path))
    assert report.ok and any("runs dynamo.frontend but has no componentType" in w for w in report.warnings)
    (graph,) = report.graphs
    assert contract.untyped_frontend(graph.spec.services["Frontend"])
    assert not contract.untyped_frontend(graph.spec.services["MockerWorker"])
    opts = RunOptions(state_dir=str(tmp_path / "state"), model=str(tiny_model))
    with pytest.raises(ValueError, match="service Frontend runs dynamo.frontend but has no componentType"):
        build_plans(graph, opts, {}, devices=[])


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_run_refuses_it_before_anything_starts(tmp_path, tiny_model):
    done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "run", untyped(tmp_path), "--model",
                           str(tiny_model), "--frontend-port", "0", "--control-port", "0", "--no-status"],
                          cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1].startswith("error: service Frontend runs dynamo.frontend but has no "
                                                   "componentType"), done.stderr
    assert "-0]" not in done.stdout + done.stderr  # nothing was started
