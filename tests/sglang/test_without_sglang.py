"""`python -m dynamo.sglang` in a Python without SGLang (the main venv): `--help` and bad flags are
answered from the static flag table, and a command line that parses ends in one line saying SGLang is
not installed and how to install it (exit 2), never a traceback."""

from __future__ import annotations

import pytest

from dynamo.sglang.args import sglang_available
from tests.fixtures.procs import one_line_refusal, run_module

# Run by the suite's own Python: the main venv, which has no SGLang.
pytestmark = [pytest.mark.e2e, pytest.mark.skipif(sglang_available(), reason="SGLang is installed here")]


def test_help_works_without_sglang():
    done = run_module("dynamo.sglang", "--help")
    assert done.returncode == 0, done.stderr
    assert "--model-path" in done.stdout and "--disaggregation-mode" in done.stdout and "--namespace" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_run_without_sglang_is_one_line_saying_how_to_install_it(tmp_path):
    done = run_module("dynamo.sglang", "--model-path", str(tmp_path), "--disaggregation-mode", "prefill")
    line = one_line_refusal(done, "python -m dynamo.sglang: error: SGLang is not installed")
    assert "pip install" in line


def test_a_bad_flag_is_still_argparses_error_without_sglang():
    done = run_module("dynamo.sglang", "--no-such-flag")
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in done.stderr and "Traceback" not in done.stderr
