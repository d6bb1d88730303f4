"""`python -m dynamo.deploy`'s flags: a port outside 0..65535 and a negative (or NaN) --grace are usage
errors naming the flag (exit 2, one line), not a traceback from bind() or a SIGKILL at once on stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dynamo.deploy.__main__ import build_parser
from tests.fixtures.procs import REPO


@pytest.mark.parametrize("flag, value, message", [
    ("--frontend-port", "99999", "must be 0..65535, got 99999"),
    ("--frontend-port", "-1", "must be >= 0, got -1"),
    ("--control-port", "70000", "must be 0..65535, got 70000"),
    ("--control-port", "-3", "must be >= 0, got -3"),
    ("--grace", "-5", "must be >= 0, got -5"),
    ("--grace", "nan", "must be >= 0, got nan"),
])
def test_an_out_of_range_flag_is_a_usage_error_naming_it(capsys, flag, value, message):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["run", "x.yaml", flag, value])
    assert done.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_the_edges_are_taken():
    args = build_parser().parse_args(["run", "x.yaml", "--frontend-port", "65535", "--control-port", "0",
                                      "--grace", "0"])
    assert (args.frontend_port, args.control_port, args.grace) == (65535, 0, 0.0)


@pytest.mark.e2e
def test_run_with_a_port_out_of_range_exits_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dynamo.deploy", "run",
                           str(REPO / "examples/backends/mocker/deploy/agg.yaml"), "--frontend-port", "99999"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].endswith("argument --frontend-port: must be 0..65535, got 99999")
