"""`dynamo.vllm` against vLLM 0.32's own objects, in the vLLM venv without an engine (seconds): its real
argument parser, its `SchedulerStats`, and the `DynamoTcpConnector` scheduler side built from a
`--kv-transfer-config` as the worker fills it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.fixtures.procs import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]


def run(vllm_python, script: str, model_dir, env: dict[str, str] | None = None) -> dict:
    """`script`'s last stdout line, as JSON (it runs in the vLLM venv). Its `--model` is an empty local
    directory (MODEL_DIR): offline, vLLM's engine args would look a model name up in the Hub cache."""
    proc = subprocess.run([str(vllm_python), "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), "MODEL_DIR": str(model_dir), **(env or {})})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ARGS = """
import dataclasses, json, os
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser
from dynamo.vllm.args import DynamoVllmArgs, parse_args

engine_dests = {a.dest for a in AsyncEngineArgs.add_cli_args(FlexibleArgumentParser())._actions}
shared = sorted(engine_dests & {f.name for f in dataclasses.fields(DynamoVllmArgs)})
env_only, engine, _ = parse_args(["--model", os.environ["MODEL_DIR"]])
own, engine_own, _ = parse_args(["--model", os.environ["MODEL_DIR"], "--reasoning-parser", "ernie45", "--dyn-reasoning-parser",
                                 "deepseek_r1"])
print(json.dumps({"shared": shared, "env": env_only.reasoning_parser, "engine_default": engine.reasoning_parser,
                  "own": own.reasoning_parser, "engine": engine_own.reasoning_parser}))
"""


def test_the_reasoning_parsers_of_vllm_and_dynamo_are_apart(vllm_python, tmp_path):
    """vLLM's parser defaults `--reasoning-parser` to '': it used to shadow DYN_REASONING_PARSER (one dest),
    and vLLM's own value went to the card instead of the engine (ernie45: exit 2, unknown to our frontend)."""
    got = run(vllm_python, ARGS, tmp_path, {"DYN_REASONING_PARSER": "qwen3"})
    assert got["shared"] == []
    assert (got["env"], got["engine_default"]) == ("qwen3", "")
    assert (got["own"], got["engine"]) == ("deepseek_r1", "ernie45")


STATS = """
import json
from vllm.v1.metrics.stats import SchedulerStats
from dynamo.vllm.events import EngineStats

stats = EngineStats(total_slots=8)
stats.total_blocks = 100
stats.update(SchedulerStats(num_running_reqs=1, num_waiting_reqs=2, num_skipped_waiting_reqs=3, kv_cache_usage=0.5))
print(json.dumps({"waiting": stats.waiting, "load": stats.load_metrics(worker_id=1).num_requests_waiting}))
"""


def test_waiting_counts_the_requests_vllm_deferred(vllm_python, tmp_path):
    """vLLM's own vllm:num_requests_waiting is num_waiting_reqs + num_skipped_waiting_reqs; so are ours."""
    assert run(vllm_python, STATS, tmp_path) == {"waiting": 5, "load": 5}


CONNECTOR = """
import json, logging, os
import torch
from prometheus_client import CollectorRegistry, generate_latest
from vllm import SamplingParams
from vllm.config import CacheConfig, KVTransferConfig, VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1.base import KVConnectorRole
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.request import Request, RequestStatus
from dynamo.vllm import disagg
from dynamo.vllm.args import parse_args
from dynamo.vllm.tcp_connector import DynamoTcpConnector

warnings = []
handler = logging.Handler()
handler.emit = lambda record: warnings.append(record.getMessage()) if record.levelno >= logging.WARNING else None
logging.getLogger("vllm.dynamo_tcp_connector").addHandler(handler)
SPEC = FullAttentionSpec(block_size=32, num_kv_heads=2, head_size=16, dtype=torch.float32)
KV_CACHE = KVCacheConfig(num_blocks=10, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l0"], SPEC)])
IDS = list(range(6, 70))

def scheduler_side(kv_transfer_config):
    config = VllmConfig(cache_config=CacheConfig(block_size=32), kv_transfer_config=kv_transfer_config)
    return DynamoTcpConnector(config, KVConnectorRole.SCHEDULER, KV_CACHE)

def request(rid, params, status=None):
    req = Request(rid, IDS, SamplingParams(max_tokens=4, extra_args={"kv_transfer_params": params}), None)
    if status is not None:
        req.status, req.num_computed_tokens = status, len(IDS)
    return req

def finished(connector, rid):
    return connector.request_finished(request(rid, {"do_remote_decode": True}, RequestStatus.FINISHED_LENGTH_CAPPED),
                                      [1, 2])

config, engine_args, _ = parse_args(["--model", os.environ["MODEL_DIR"], "--disaggregation-mode", "prefill", "--kv-transfer-config",
                                     '{"kv_connector":"DynamoTcpConnector","kv_role":"kv_both"}'])
disagg.configure(engine_args, config.mode, config.kv_transfer_backend, "file")
filled = engine_args.kv_transfer_config
delay, params = finished(scheduler_side(filled), "p1")
bare = KVTransferConfig(kv_connector="DynamoTcpConnector", kv_role="kv_both",
                        kv_connector_module_path="dynamo.vllm.tcp_connector")
unfilled = finished(scheduler_side(bare), "p2")
decode = scheduler_side(KVTransferConfig(kv_connector="DynamoTcpConnector", kv_role="kv_consumer",
                                         kv_connector_module_path="dynamo.vllm.tcp_connector"))
req = request("d1", dict(params, remote_port=0))
matched = [decode.get_num_new_matched_tokens(req, 0) for _ in range(2)]
stats = decode.get_kv_connector_stats()
registry = CollectorRegistry()
xfer = disagg.TransferMetrics(registry, disagg.DisaggSetup("tcp", "DynamoTcpConnector", "test"), 0)
xfer.observe_connector_stats(stats.data)
failures = [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith("dynamo_component_kv_transfer_failures_total")]
print(json.dumps({"extra": filled.kv_connector_extra_config, "delay": delay, "params": params,
                  "unfilled": list(unfilled), "matched": matched, "failed": stats.data["num_failed_transfers"],
                  "again": decode.get_kv_connector_stats() is None, "failures": failures, "warnings": warnings}))
"""


def test_a_tcp_connector_from_kv_transfer_config_advertises_a_pull_endpoint(vllm_python, tmp_path):
    got = run(vllm_python, CONNECTOR, tmp_path)
    extra, params = got["extra"], got["params"]
    assert extra["port"] > 0 and extra["host"] == "127.0.0.1"  # filled as --kv-transfer-backend tcp fills it
    assert got["delay"] is True and (params["remote_host"], params["remote_port"]) == (extra["host"], extra["port"])
    # Without a port: the prefill side hands over nothing (nothing kept, nothing counted as sent) and says so.
    assert got["unfilled"] == [False, None]
    assert any("no KV pull endpoint" in w for w in got["warnings"])
    assert any("not handed over: no pull endpoint" in w for w in got["warnings"])
    # Params naming no endpoint: the decode side recomputes, once, with a warning and a failed transfer.
    assert got["matched"] == [[0, False], [0, False]] and got["failed"] == [1] and got["again"]
    assert got["failures"] == ['dynamo_component_kv_transfer_failures_total{transport="tcp"} 1.0']
    assert sum("KV of d1 not pulled: the prefill worker gave no pull endpoint" in w for w in got["warnings"]) == 1
