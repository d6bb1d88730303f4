"""`python -m dynamo.profiler` as a user meets it: a file that cannot be read, or a request refused
(a spec changed under a frozen profile, `--dry-run` too), is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import pytest
import yaml

from dynamo.profiler.__main__ import main

REQUEST = {"apiVersion": "nvidia.com/v1beta1", "kind": "DynamoGraphDeploymentRequest", "metadata": {"name": "r1"},
           "spec": {"model": "Qwen/Qwen3-0.6B", "backend": "vllm", "autoApply": False,
                    "workload": {"isl": 300, "osl": 30}, "sla": {"ttft": 200, "itl": 20}}}


def one_line_error(capsys, argv: list[str], *words: str) -> None:
    """`main(argv)` returns 2 (an exception would be the traceback) and says one line, naming `words`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert all(w in errors[0] for w in words), errors[0]


@pytest.mark.parametrize("name, text, where", [
    ("bad.yaml", "kind: DynamoGraphDeploymentRequest\nspec:\n  model: [unclosed\n   backend: vllm\n", "line 3"),
    ("bad.json", '{"apiVersion": "nvidia.com/v1beta1", "spec": {"model": "x",}', "line 1"),
])
def test_a_malformed_file_is_one_line_and_exit_2(tmp_path, capsys, name, text, where):
    (tmp_path / name).write_text(text)
    one_line_error(capsys, ["--config", str(tmp_path / name), "--dry-run"], name, "cannot read", where)


def test_a_dry_run_into_a_dir_holding_another_spec_is_one_line_and_exit_2(tmp_path, capsys):
    changed = {**REQUEST, "spec": {**REQUEST["spec"], "sla": {"ttft": 250, "itl": 20}}}
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(changed))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "profiler_status.yaml").write_text(yaml.safe_dump({"dgdr": "r1", "specDigest": "0123456789abcdef",
                                                              "phase": "Ready", "status": "success"}))
    one_line_error(capsys, ["--config", str(tmp_path / "b.yaml"), "--output-dir", str(out), "--dry-run"],
                   "immutable once profiling starts")


def test_a_spec_change_is_said_by_the_cli_not_the_library(tmp_path, capsys):
    """`run()` raises SpecChanged; `python -m dynamo.profiler` prints it (one line, exit 2)."""
    import asyncio

    from dynamo.profiler import dgdr
    from dynamo.profiler.pipeline import Options, run
    from dynamo.profiler.status import SpecChanged

    out = tmp_path / "out"
    out.mkdir()
    (out / "profiler_status.yaml").write_text(yaml.safe_dump({"dgdr": "r1", "specDigest": "0123456789abcdef",
                                                              "phase": "Ready", "status": "success"}))
    with pytest.raises(SpecChanged):
        asyncio.run(run(dgdr.parse(REQUEST), Options(output_dir=out, dry_run=True)))
    assert capsys.readouterr().err == ""
