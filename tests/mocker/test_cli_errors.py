"""The mocker's command line against user mistakes and Dynamo 1.6.1's launch commands: a wrong
`--model-path` is one clear line (exit 2, as a bad flag), not the engine start's traceback; a value
argparse cannot convert names its type; 1.6.1's hidden `--router-kv-overlap-score-weight` (and its
older `--kv-overlap-score-weight`) is accepted with a warning, as the other router flags are."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dynamo.mocker.compat_flags import parse_mocker_args


@pytest.mark.parametrize("flag", ["--router-kv-overlap-score-weight", "--kv-overlap-score-weight"])
def test_dynamos_hidden_overlap_score_weight_is_accepted_with_a_warning(flag):
    args, warnings = parse_mocker_args(["--model-path", "m", flag, "1.0"], environ={})
    assert args.model_path == "m"
    assert len(warnings) == 1 and warnings[0].startswith(f"{flag} is accepted") and "does not route" in warnings[0]


def test_a_value_that_is_not_a_number_names_the_type(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_mocker_args(["--model-path", "m", "--speedup-ratio", "abc"], environ={})
    assert exc.value.code == 2
    assert "argument --speedup-ratio: invalid float value: 'abc'" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize("argv,message", [
    (["--model-path", "/nonexistent/qa"], "--model-path /nonexistent/qa: neither a model directory nor a Hugging "
                                          "Face model id"),
    ([], "--model-path is required"),
    (["--model-path", "nobody/no-such-model-qa"], "--model-path nobody/no-such-model-qa: not in this machine's "
                                                  "Hugging Face cache"),
])
def test_a_wrong_model_path_is_one_line_and_exit_2(tmp_path, argv, message):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "DYN_DISCOVERY_BACKEND": "file",
           "DYN_FILE_KV": str(tmp_path / "kv"), "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "dynamo.mocker", *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"python -m dynamo.mocker: error: {message}")
