"""`POST /v1/loras` (worker/lora.py) answers 400 when the adapter itself is refused (a rank above
`--max-lora-rank`, a corrupt safetensors file), on the real mocker adapter and on the vLLM worker's
(its engine errors arrive as text, so a stand-in raises vLLM's own messages), and keeps 500 for a
fault of the worker. Nothing of a refused adapter stays registered."""

from __future__ import annotations

import asyncio
import json

import pytest

from dynamo.llm.model_card import ModelDeploymentCard
from dynamo.mocker.adapter import MockerAdapter
from dynamo.mocker.args import MockerArgs
from dynamo.runtime.records import EndpointId
from dynamo.worker.lora import LoraManager


class _Runtime:
    instance_id = 0x1234

    def __init__(self) -> None:
        self.keys: dict[str, bytes] = {}

    async def register_key(self, key: str, value: bytes) -> None:
        self.keys[key] = value

    async def unregister_key(self, key: str) -> None:
        self.keys.pop(key, None)


class _EngineRaising:
    """A LoRA engine whose load fails with `exc` (vLLM's AsyncLLM re-raises its engine core's error as a
    plain Exception carrying the text)."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    async def load_lora(self, name: str, path: str, lora_id: int) -> None:
        raise self.exc

    async def unload_lora(self, name: str) -> None:
        pass


def _adapter_dir(tmp_path, rank: int):
    path = tmp_path / f"adapter-r{rank}"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 16,
                                                          "target_modules": ["q_proj"]}))
    return path


def _post(manager: LoraManager, name: str, uri: str) -> tuple[int, dict]:
    """The request through the manager's ASGI app, as the system port serves it."""
    sent: list[dict] = []
    body = json.dumps({"lora_name": name, "source": {"uri": uri}}).encode()

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/loras", "headers": []}
    asyncio.run(manager.app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(payload)


def _manager(adapter) -> LoraManager:
    card = ModelDeploymentCard(display_name="base", slug="base", model_path="base", context_length=4096,
                               kv_cache_block_size=16)
    return LoraManager(_Runtime(), EndpointId("ns", "backend", "generate"), adapter, card, max_loras=2)


def test_the_mocker_refuses_a_rank_above_max_lora_rank_with_a_400(tmp_path):
    manager = _manager(MockerAdapter(MockerArgs(model_path="x", enable_lora=True, max_lora_rank=16)))
    status, body = _post(manager, "r32", _adapter_dir(tmp_path, 32).as_uri())
    assert status == 400, body
    assert body == {"status": "error", "message": "failed to load LoRA adapter 'r32': LoRA rank 32 is greater "
                                                  "than --max-lora-rank 16"}
    assert manager.loaded == {} and manager.runtime.keys == {}
    assert _post(manager, "r8", _adapter_dir(tmp_path, 8).as_uri())[0] == 200


# As vLLM 0.32's CPU worker gave them (`dynamo.vllm --max-lora-rank 8`: a rank-32 adapter; a corrupt
# adapter_model.safetensors), and the uniprocess executor's shorter form.
_VLLM = "Call to add_lora method failed: Worker failed with error '{}', please check the stack trace above for the " \
        "root cause"


@pytest.mark.parametrize("message", [
    _VLLM.format("LoRA rank 32 is greater than max_lora_rank 8."),
    _VLLM.format("Error while deserializing header: header too large"),
    "Call to add_lora method failed: LoRA rank 32 is greater than max_lora_rank 8.",
])
def test_vllms_refusals_of_the_adapter_are_400s(tmp_path, message):
    manager = _manager(_EngineRaising(Exception(message)))
    status, body = _post(manager, "bad", _adapter_dir(tmp_path, 32).as_uri())
    assert status == 400, body
    assert body["status"] == "error" and message in body["message"]
    assert manager.runtime.keys == {}


def test_a_fault_of_the_worker_stays_a_500(tmp_path):
    manager = _manager(_EngineRaising(RuntimeError("EngineCore encountered an issue. See stack trace")))
    status, body = _post(manager, "a", _adapter_dir(tmp_path, 8).as_uri())
    assert status == 500 and body["status"] == "error"
