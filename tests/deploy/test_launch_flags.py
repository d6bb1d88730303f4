"""Every launch script's processes, printed by `LAUNCH_CHECK=1` instead of started, pass the
same flag check as the DGD manifests (`dynamo.deploy.parsers.check_args`), with no
warning: each worker module is provided and its flags are known."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from dynamo.deploy.parsers import check_args
from tests.fixtures.procs import REPO

pytestmark = pytest.mark.e2e
SCRIPTS = sorted((REPO / "examples/backends").glob("*/launch/*.sh"))


def commands(script) -> list[list[str]]:
    proc = subprocess.run(["bash", str(script)], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LAUNCH_CHECK": "1", "MODEL_PATH": "/models/tiny"})
    assert proc.returncode == 0, proc.stderr
    return [shlex.split(line)[1:] for line in proc.stdout.splitlines() if line.startswith("CHECK ")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_launch_script_flags_check_clean(script):
    cmds = commands(script)
    assert any(c[0].startswith("dynamo.") and c[0] != "dynamo.frontend" for c in cmds), cmds
    for module, *args in cmds:
        result = check_args(module, args)
        assert result.errors == [] and result.warnings == [], (module, result)


def test_a_misspelt_flag_is_caught():
    result = check_args("dynamo.sglang", ["--model-path", "m", "--page-sise", "16"])
    assert any("--page-sise" in e for e in result.errors)


def test_a_vllm_chat_processor_frontend_passes_validation_with_engine_arguments():
    check = check_args("dynamo.frontend", ["--dyn-chat-processor", "vllm", "--max-model-len", "4096",
                                           "--tool-call-parser", "hermes"])
    assert check.errors == [] and any("--max-model-len" in w for w in check.warnings)
    assert check_args("dynamo.frontend", ["--max-model-len", "4096"]).errors
