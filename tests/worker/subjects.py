"""Engine adapters under test, each started the way the harness starts it (an
`EngineContext` whose KV sink is a list), with what the contract suite needs to look at:
how many requests the engine still holds, and how it received disaggregated params.

mocker: the real MockEngine. sglang / trtllm: the adapters over the STAND-INS in
`standins.py` (their engines cannot run here). vllm: the real AsyncLLM (CPU build), only
in the vLLM venv (`tests/vllm/test_adapter_contract.py` runs the suite there).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from prometheus_client import CollectorRegistry

from dynamo.worker.adapter import EngineContext
from dynamo.worker.requests import RequestHandler
from dynamo.worker.role import WorkerRole
from tests.worker import standins

INSTANCE_ID = 42


@dataclass
class Subject:
    engine_name: str
    adapter: Any
    role: WorkerRole
    block_size: int
    context: int  # prompts this long are rejected
    held: Callable[[], int]  # requests the engine still holds
    kv: list = field(default_factory=list)
    check_decode_params: Callable[[dict], None] | None = None
    aborted: Callable[[], int] | None = None
    source: Any = None

    def handler(self, limit: int = 0) -> RequestHandler:
        return RequestHandler(self.adapter, limit)

    def emit(self, event, storage_tier: str = "device") -> None:
        """The harness's KV publisher as far as the suite looks: device-tier events kept in order."""
        if storage_tier == "device":
            self.kv.append(event)

    async def start(self) -> None:
        ctx = EngineContext(role=self.role, instance_id=INSTANCE_ID, registry=CollectorRegistry(),
                            emit_kv_event=self.emit)
        info = await self.adapter.start(ctx)
        if info.publishes_kv_events:
            self.source = self.adapter.kv_event_source()
            if self.source is not None:
                await self.source.start(self.emit)

    async def close(self) -> None:
        if self.source is not None:
            await self.source.close()
        await self.adapter.stop()


def mocker(role: WorkerRole, model: str) -> Subject:
    from dynamo.mocker.adapter import MockerAdapter
    from dynamo.mocker.args import MockerArgs

    args = MockerArgs(model_path=model, block_size=4, speedup_ratio=1.0, context_length=256,
                      disaggregation_mode=role.value, kv_transfer_bandwidth=1000.0)
    adapter = MockerAdapter(args)
    return Subject("mocker", adapter, role, 4, 256,
                   held=lambda: adapter.engine.num_running + adapter.engine.num_waiting)


def sglang(role: WorkerRole, model: str) -> Subject:
    from dynamo.sglang.adapter import SglangAdapter
    from dynamo.sglang.args import DynamoSglangArgs

    sa = standins.SglangServerArgsStandIn(model_path=model, page_size=4,
                                          disaggregation_mode="null" if role is WorkerRole.AGG else role.value)
    adapter = SglangAdapter(DynamoSglangArgs(), sa, engine_factory=standins.SglangEngineStandIn)

    def check(params: dict) -> None:
        call = adapter.engine.calls[-1]
        assert call["bootstrap"] == (params["bootstrap_host"], params["bootstrap_port"], params["bootstrap_room"])
        assert call["sampling_params"]["max_new_tokens"] > 1

    return Subject("sglang", adapter, role, 4, 4096, held=lambda: len(adapter.engine.active),
                   check_decode_params=check, aborted=lambda: len(adapter.engine.aborted))


def trtllm(role: WorkerRole, model: str) -> Subject:
    from dynamo.trtllm.adapter import TrtllmAdapter
    from dynamo.trtllm.args import DynamoTrtllmArgs

    config = DynamoTrtllmArgs(model=model, kv_block_size=4, publish_kv_events=True, disaggregation_mode=role.value)
    adapter = TrtllmAdapter(config, api=standins.trtllm_api_standin())

    def check(params: dict) -> None:
        sent = adapter.llm.calls[-1]["disaggregated_params"]
        assert sent.request_type == "generation_only"
        assert sent.opaque_state == b"\x00state\xff" and sent.ctx_request_id == 7

    return Subject("trtllm", adapter, role, 4, 4096, held=lambda: adapter.llm.active, check_decode_params=check,
                   aborted=lambda: adapter.llm.aborted)


def vllm(role: WorkerRole, model: str) -> Subject:
    from dynamo.vllm.adapter import VllmAdapter
    from dynamo.vllm.args import parse_args

    config, engine_args, _ = parse_args(["--model", model, "--enforce-eager", "--dtype", "float32", "--block-size", "32",
                                      "--max-model-len", "512", "--distributed-executor-backend", "uni",
                                      "--seed", "0", "--disaggregation-mode", role.value,
                                      # one running request, the rest queued in priority order: the
                                      # priority test watches the order (the others run one at a time)
                                      "--scheduling-policy", "priority", "--max-num-seqs", "1"])
    adapter = VllmAdapter(config, engine_args)
    return Subject("vllm", adapter, role, 32, 512, held=lambda: adapter.engine.get_num_unfinished_requests())


BUILDERS = {"mocker": mocker, "sglang": sglang, "trtllm": trtllm, "vllm": vllm}
# Engines whose subject runs one request at a time and queues the rest by agent-hint priority
# (the stand-ins only record the call: tests/sglang).
ORDERS_BY_PRIORITY = frozenset({"vllm"})
ENGINES = os.environ.get("DYN_ADAPTER_SUITE_ENGINES", "mocker,sglang,trtllm").split(",")
ROLES = {e: [WorkerRole.AGG] if e == "vllm" else list(WorkerRole) for e in BUILDERS}


class Subjects:
    """Started lazily, one per (engine, role), closed at the end of the module."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._started: dict[tuple[str, WorkerRole], Subject] = {}

    async def get(self, engine: str, role: WorkerRole = WorkerRole.AGG) -> Subject:
        key = (engine, role)
        if key not in self._started:
            subject = BUILDERS[engine](role, self.model)
            await subject.start()
            self._started[key] = subject
        return self._started[key]

    async def close(self) -> None:
        for subject in self._started.values():
            await subject.close()
        await asyncio.sleep(0)
