"""The request's status file and console line: a failure's message carries its reason."""

from __future__ import annotations

import yaml

from dynamo.profiler.status import STATUS_FILE, Status, headline

RUN_EXITED = """dynamo.deploy run exited (2):
2026-12-07 18:00:01 INFO dynamo.deploy: reading candidates/tp1/dgd.yaml
candidates/tp1/dgd.yaml: error: model Qwen/Qwen3-0.6B is not in this machine's Hugging Face cache; pass --model DIR
"""
INVALID = """generated DGD does not validate:
out/final_config.yaml: error: VllmWorker: dynamo.vllm: unknown flag --foo
out/final_config.yaml: warning: Frontend: something minor
"""


def test_a_failure_ending_on_a_colon_is_completed_by_its_cause(tmp_path, capsys):
    assert headline(RUN_EXITED) == ("dynamo.deploy run exited (2): candidates/tp1/dgd.yaml: error: model "
                                    "Qwen/Qwen3-0.6B is not in this machine's Hugging Face cache; pass --model DIR")
    assert headline(INVALID) == ("generated DGD does not validate: out/final_config.yaml: error: VllmWorker: "
                                 "dynamo.vllm: unknown flag --foo")
    assert headline("stopped by SIGTERM while profiling") == "stopped by SIGTERM while profiling"
    assert headline("") == "failed"
    Status(tmp_path, "r1", "d").fail(INVALID)
    saved = yaml.safe_load((tmp_path / STATUS_FILE).read_text())
    assert saved["message"] == headline(INVALID) and saved["error"] == INVALID
    assert f"[dgdr r1] Failed: {headline(INVALID)}" in capsys.readouterr().err
