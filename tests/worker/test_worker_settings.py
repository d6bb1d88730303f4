"""The settings every worker shares (`dynamo/worker/engine_args.py`), on each worker's own command line
(vLLM's and SGLang's from their static flag tables, main venv): a bad `--endpoint` stops the worker while
parsing, `--migration-limit` says it has no effect here, and Dynamo's settings never share an argparse
dest with the engine's own arguments (one would silently take the other's value, and env twins would
never apply)."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from dynamo.mocker.compat_flags import parse_mocker_args
from dynamo.sglang import server_flags
from dynamo.sglang.args import DynamoSglangArgs
from dynamo.sglang.args import build_parser as sglang_build_parser
from dynamo.sglang.args import parse_split as sglang_split
from dynamo.trtllm.args import build_parser as trtllm_build_parser
from dynamo.trtllm.args import parse_worker_args as trtllm_parse
from dynamo.vllm import engine_flags
from dynamo.vllm.args import DynamoVllmArgs
from dynamo.vllm.args import build_parser as vllm_build_parser
from dynamo.vllm.args import parse_split as vllm_split
from dynamo.worker.flag_table import add_static_flags

# Each worker's command line -> its warnings (all exit 2 on a refused value).
WORKERS = {
    "vllm": lambda argv: vllm_split(["--model", "m", *argv], use_vllm=False)[2],
    "sglang": lambda argv: sglang_split(["--model-path", "m", *argv], use_sglang=False)[2],
    "trtllm": lambda argv: trtllm_parse(["--model", "/m", *argv])[1],
    "mocker": lambda argv: parse_mocker_args(["--model-path", "m", *argv], environ={})[1],
}


@pytest.mark.parametrize("worker", sorted(WORKERS))
@pytest.mark.parametrize("endpoint", ["foo", "dyn://a..c", "dyn://a.b.c.d"])
def test_a_malformed_endpoint_is_refused_while_parsing(worker, endpoint, capsys):
    with pytest.raises(SystemExit) as exc:
        WORKERS[worker](["--endpoint", endpoint])
    assert exc.value.code == 2
    assert f"--endpoint: invalid endpoint {endpoint!r}: expected dyn://namespace.component.endpoint" in \
        capsys.readouterr().err


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_a_well_formed_endpoint_is_taken(worker):
    WORKERS[worker](["--endpoint", "dyn://ns.backend.generate"])
    WORKERS[worker](["--endpoint", "backend.generate"])  # the namespace's, as the runtime reads it


def test_the_endpoints_variable_is_checked_as_the_flag(monkeypatch, capsys):
    monkeypatch.setenv("DYN_ENDPOINT", "foo")
    with pytest.raises(SystemExit) as exc:
        WORKERS["vllm"]([])
    assert exc.value.code == 2 and "invalid endpoint 'foo'" in capsys.readouterr().err


@pytest.mark.parametrize("worker", sorted(WORKERS))
def test_the_workers_migration_limit_says_it_has_no_effect(worker):
    """NVIDIA Dynamo 1.6.1's workers have no --migration-limit; its frontend's own decides, as ours does."""
    warnings = [w for w in WORKERS[worker](["--migration-limit", "3"]) if w.startswith("--migration-limit")]
    assert warnings == ["--migration-limit 3: no effect here; set --migration-limit on the frontend (its own "
                        "limit decides migration)"]
    assert not any(w.startswith("--migration-limit") for w in WORKERS[worker]([]))


def test_the_migration_limit_help_says_so():
    for parser in (vllm_build_parser(use_vllm=False), sglang_build_parser(use_sglang=False), trtllm_build_parser()):
        assert parser._option_string_actions["--migration-limit"].help.startswith("No effect here")


def _engine_dests(table) -> set[str]:
    parser = argparse.ArgumentParser(add_help=False)
    add_static_flags(parser, table)
    return {action.dest for action in parser._actions}


@pytest.mark.parametrize("config, table", [(DynamoVllmArgs, engine_flags), (DynamoSglangArgs, server_flags)])
def test_no_dynamo_setting_shares_a_dest_with_the_engines_arguments(config, table):
    assert {f.name for f in dataclasses.fields(config)} & _engine_dests(table) == set()
