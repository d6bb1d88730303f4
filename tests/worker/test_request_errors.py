"""The worker's mapping of engine exceptions to request-plane codes (worker/requests.py): a request for a
LoRA adapter the worker does not hold is `lora_not_loaded` (its caller tries another holder, or says the
adapter is gone), not the `bad_request` of the engine's other ValueErrors, which blames the client."""

from __future__ import annotations

from dynamo.runtime.rp_server import HandlerError
from dynamo.runtime.wire import ErrorCode
from dynamo.worker.adapter import LoraNotLoaded
from dynamo.worker.requests import RequestHandler


class NoOwnCodes:
    def error_code(self, exc: Exception) -> ErrorCode | None:
        return None


def test_an_adapter_not_held_is_its_own_code_not_a_bad_request():
    handler = RequestHandler(NoOwnCodes())  # type: ignore[arg-type]
    err = handler.handler_error(LoraNotLoaded("ada"))
    assert isinstance(err, HandlerError) and err.code == ErrorCode.LORA_NOT_LOADED == "lora_not_loaded"
    assert str(err) == "LoRA adapter 'ada' is not loaded on this worker"
    assert handler.handler_error(ValueError("top_k out of range")).code == ErrorCode.BAD_REQUEST
    crash = RuntimeError("engine crashed")
    assert handler.handler_error(crash) is crash  # -> internal
