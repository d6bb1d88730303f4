"""Flag checks of command lines whose words are filled in where they run (`$VAR`, unknown `$(VAR)`):
never an error of their own, never the internal stand-in in a message."""

from __future__ import annotations

import pytest

from dynamo.deploy.parsers import check_args
from tests.deploy.manifests import check, mocker_graph


@pytest.mark.parametrize("args", [
    ["--model-path", "$MODEL_DIR", "--model-name", "tiny", "$EXTRA_ARGS"],
    ["$EXTRA_ARGS", "--model-path", "/m"],
    ["--model-path", "/m", "$(MY_ARGS)", "$A", "${B}"],
    ["--model-path=$MODEL_DIR", "--speedup-ratio=$SPEED", "--block-size", "${BS}"],
])
def test_words_the_shell_fills_in_are_not_errors(args):
    result = check_args("dynamo.mocker", args)
    assert result.errors == [], result.errors
    assert not any("'0'" in w for w in result.warnings)


def test_a_word_in_a_flags_place_is_named_in_a_warning():
    result = check_args("dynamo.mocker", ["--model-path", "/m", "$EXTRA_ARGS"])
    assert any("$EXTRA_ARGS" in w and "not checked" in w for w in result.warnings), result.warnings


def test_a_filled_in_value_passes_a_flag_with_choices_and_real_errors_remain():
    assert check_args("dynamo.frontend", ["--router-mode", "$(MODE)"]).errors == []
    errors = check_args("dynamo.mocker", ["--model-path", "$M", "$EXTRA", "--bogus"]).errors
    assert errors == ["dynamo.mocker: unknown flag --bogus"]


def test_validate_accepts_a_shell_variable_holding_several_flags(tmp_path):
    worker = {"envs": [{"name": "MODEL_DIR", "value": "/m"}, {"name": "EXTRA_ARGS", "value": "--speedup-ratio 5"}],
              "main": {"command": ["/bin/sh", "-c"],
                       "args": ["exec python3 -m dynamo.mocker --model-path $MODEL_DIR --model-name tiny $EXTRA_ARGS"]}}
    report = check(mocker_graph(worker=worker), tmp_path)
    assert report.ok, report.errors
    assert any("$EXTRA_ARGS" in w for w in report.warnings), report.warnings
    assert not any("'0'" in line for line in report.lines())


def test_validate_accepts_an_unknown_kubernetes_reference_holding_flags(tmp_path):
    worker = {"envs": [{"name": "MY_ARGS", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
              "main": {"command": ["/bin/sh", "-c"], "args": ["python3 -m dynamo.mocker --model-path /m $(MY_ARGS)"]}}
    report = check(mocker_graph(worker=worker), tmp_path)
    assert report.ok, report.errors
    exec_form = {"envs": worker["envs"], "main": {"args": ["--model-path", "/m", "$(MY_ARGS)"]}}
    report = check(mocker_graph(worker=exec_form), tmp_path)
    assert report.ok, report.errors
    assert any("$(MY_ARGS)" in w for w in report.warnings), report.warnings


def test_a_filled_in_value_after_an_engine_namespaced_flag_is_its_value():
    """`--trtllm.tokenizer $(MODEL_PATH)`: the parser learns `--trtllm.*` flags later, so the filled-in word
    is the flag's value there (no 'requires a value'); after an unknown flag it adds no second error."""
    assert check_args("dynamo.trtllm", ["--model-path", "/m", "--trtllm.tokenizer", "$(MODEL_PATH)"]).errors == []
    assert check_args("dynamo.mocker", ["--model-path", "/m", "--no-such", "$(X)"]).errors == [
        "dynamo.mocker: unknown flag --no-such"]
