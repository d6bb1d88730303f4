"""`run` of a graph whose worker reads a model path that does not exist on this machine (the examples'
`/opt/models/tiny-llama` without `--model`): refused before anything starts, with one line naming the service,
the path and the fix, as for a Hugging Face id it cannot get; not a crash loop of workers printing tracebacks.
An `apply` of such a manifest is refused the same way (400, nothing changed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dynamo.deploy.plan import RunOptions, build_plans
from dynamo.deploy.validate import validate_file
from tests.fixtures.procs import REPO

DISAGG = REPO / "examples/backends/mocker/deploy/disagg.yaml"


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_model_path_missing_here_stops_run_before_anything_starts(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "run", str(DISAGG), "--frontend-port", "0",
                           "--control-port", "0", "--no-status"],
                          cwd=REPO, capture_output=True, text=True, timeout=90, env=_env(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: service ") and "model /opt/models/tiny-llama does not exist on this " \
        "machine; pass --model DIR" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr and "-0]" not in done.stdout + done.stderr  # no replica was started


def test_plans_for_run_check_the_path_and_a_model_dir_passes(tmp_path, tiny_model):
    (graph,) = validate_file(DISAGG).graphs
    opts = RunOptions(state_dir=str(tmp_path / "state"), environ={"HOME": str(tmp_path), "PATH": "/usr/bin"})
    build_plans(graph, opts, {}, devices=[])  # a plan alone (render's view) may name the pod's paths
    with pytest.raises(ValueError, match=r"model /opt/models/tiny-llama does not exist on this machine"):
        build_plans(graph, opts, {}, devices=[], paths=True)
    opts.model = str(tiny_model)
    assert build_plans(graph, opts, {}, devices=[], paths=True)


def _env(tmp_path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(tmp_path), "HOME": str(tmp_path)}
