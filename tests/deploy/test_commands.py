"""Command lines of manifests: exec and shell forms, model swap, re-rendering."""

from __future__ import annotations

import shlex

from dynamo.deploy.commands import parse_command, swap_model


def test_exec_form_split_between_command_and_args():
    line = parse_command(["python3", "-m", "dynamo.vllm"], ["--model", "Qwen/Qwen3-0.6B"])
    (inv,) = line.invocations
    assert (inv.module, inv.args) == ("dynamo.vllm", ["--model", "Qwen/Qwen3-0.6B"])
    line = parse_command(["python3"], ["-u", "-m", "dynamo.frontend", "--http-port", "8000"])
    assert [i.module for i in line.invocations] == ["dynamo.frontend"]
    assert line.invocations[0].args == ["--http-port", "8000"]


def test_shell_form_with_pipes_redirects_and_two_programs():
    script = ("python3 -m dynamo.frontend --http-port 8000 & "
              "exec python3 -m dynamo.vllm --model m --kv-transfer-config '{\"kv_role\":\"kv_both\"}' 2>&1 | tee log")
    line = parse_command(["/bin/sh", "-c"], [script])
    assert line.shell
    assert [(i.module, i.args) for i in line.invocations] == [
        ("dynamo.frontend", ["--http-port", "8000"]),
        ("dynamo.vllm", ["--model", "m", "--kv-transfer-config", '{"kv_role":"kv_both"}']),
    ]


def test_model_swap_keeps_served_name_and_renders_shell_form():
    line = parse_command(["/bin/sh", "-c"], ["exec python3 -m dynamo.vllm --model Qwen/Qwen3-0.6B --x '$HOME'"])
    inv = line.invocations[0]
    swap_model(inv, "/models/tiny")
    inv.interpreter = "/venv/bin/python"
    argv = line.render()
    assert argv[:2] == ["/bin/sh", "-c"]
    assert shlex.split(argv[2]) == ["exec", "/venv/bin/python", "-m", "dynamo.vllm", "--model", "/models/tiny",
                                    "--x", "$HOME", "--served-model-name", "Qwen/Qwen3-0.6B"]


def test_model_swap_respects_explicit_served_name_and_adds_missing_model():
    line = parse_command(["python3", "-m", "dynamo.mocker"], ["--model-name", "tiny"])
    swap_model(line.invocations[0], "/m")
    assert line.render() == ["python3", "-m", "dynamo.mocker", "--model-name", "tiny", "--model-path", "/m"]
    line = parse_command(["python3", "-m", "dynamo.frontend"], [])
    swap_model(line.invocations[0], "/m")
    assert line.render() == ["python3", "-m", "dynamo.frontend"]


def test_multi_line_scripts_as_manifests_write_them():
    """Recipes write `python3 -m dynamo.trtllm \\` over several lines: the shell joins continued lines and
    drops comments, and a newline ends a command (the next line is not more of its flags)."""
    script = ("set -e  # fail fast\n# start the worker\n"
              "python3 -m dynamo.trtllm \\\n  --model-path \"nvidia/X\" \\\n  --extra-engine-args '/cfg/a b.yaml' # its config\n"
              "echo 'a # kept' '\\\n'\npython3 -m dynamo.frontend --http-port 8000\n")
    line = parse_command(["/bin/bash", "-c"], [script])
    assert [(i.module, i.args) for i in line.invocations] == [
        ("dynamo.trtllm", ["--model-path", "nvidia/X", "--extra-engine-args", "/cfg/a b.yaml"]),
        ("dynamo.frontend", ["--http-port", "8000"]),
    ]
    assert "a # kept" in line.tokens and "\\\n" in line.tokens  # single quotes keep `#` and the continuation
    rendered = line.render()[2]
    assert [s.split()[:3] for s in rendered.splitlines() if s.strip()][-1] == ["python3", "-m", "dynamo.frontend"]
    assert parse_command(["/bin/bash", "-c"], [rendered]).tokens == line.tokens  # rendering keeps the lines apart


def test_login_and_errexit_shells_run_their_script_too():
    """`bash -lc`, `sh -ec`, `bash -e -o pipefail -c`: the script is the first operand after options."""
    for command in (["/bin/bash", "-lc"], ["sh", "-ec"], ["bash", "-e", "-o", "pipefail", "-c"], ["bash", "-c", "--"]):
        line = parse_command(command, ["exec python3 -m dynamo.frontend --http-port 8000"])
        assert line.shell and [(i.module, i.args) for i in line.invocations] == [("dynamo.frontend",
                                                                                 ["--http-port", "8000"])]
        line.invocations[0].interpreter = "/venv/bin/python"
        assert line.render() == [*command, "exec /venv/bin/python -m dynamo.frontend --http-port 8000"]
    assert not parse_command(["bash", "start.sh"], ["-c"]).shell  # a script file, not a -c script


def test_positional_arguments_of_a_shell_script_are_its_flags():
    """`sh -c 'exec python3 -m dynamo.vllm "$@" --kv-transfer-config "$(cat ...)"' -- --model M`: the words
    after the script are $0, $1...; `"$@"` holds the flags, and a command substitution stays one."""
    line = parse_command(["/bin/sh", "-c", 'exec python3 -m dynamo.vllm "$@" --kv-transfer-config "$(cat /c/x.json)"',
                          "--"], ["--model", "Qwen/Qwen3-0.6B", "--enforce-eager"])
    inv = line.invocations[0]
    assert inv.args == ["--model", "Qwen/Qwen3-0.6B", "--enforce-eager", "--kv-transfer-config", "$(cat /c/x.json)"]
    swap_model(inv, "/models/tiny")
    argv = line.render()
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["--", "--model", "Qwen/Qwen3-0.6B", "--enforce-eager"]
    assert '--kv-transfer-config "$(cat /c/x.json)"' in argv[2] and "--model /models/tiny" in argv[2]


def test_a_shell_list_of_arguments_is_not_checked_as_one_value():
    from dynamo.deploy.parsers import check_args

    result = check_args("dynamo.frontend", ["${frontend_args[@]}", "--http-port", "8000"])
    assert result.errors == [] and "${frontend_args[@]}" in result.warnings[0]
    assert check_args("dynamo.frontend", ["$@", "--no-such-flag"]).errors == ["dynamo.frontend: unknown flag --no-such-flag"]


def test_a_parser_name_the_worker_would_refuse_fails_validation():
    """The worker stops at start on an unknown parser (the pod would crash-loop): validation says so first."""
    from dynamo.deploy.parsers import check_args

    (error,) = check_args("dynamo.vllm", ["--model", "m", "--dyn-tool-call-parser", "no_such_format"]).errors
    assert "--dyn-tool-call-parser" in error and "no_such_format" in error
    assert check_args("dynamo.vllm", ["--model", "m", "--dyn-tool-call-parser", "deepseek_v4",
                                      "--dyn-reasoning-parser", "deepseek_v4"]).errors == []
    assert check_args("dynamo.vllm", ["--model", "m", "--dyn-reasoning-parser", "$(PARSER)"]).errors == []
