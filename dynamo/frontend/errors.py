"""The frontend's HTTP errors: `ApiError` (an OpenAI-shaped error body with its HTTP status)
and one named constructor per error the frontend sends, each written once.

Clients branch on these statuses, `type`s and `code`s (a 503 `no_workers` is retried, a 529
`overloaded` backs off, a 400 is not retried), so they are part of the HTTP contract: change
one here and it changes everywhere it is raised. The HTTP `code`s are their own vocabulary
(`all_workers_busy`, `worker_timeout`), written here as the plain strings clients see; some
share a spelling with a request-plane code. `from_stream_error` is the one mapping from
request-plane error codes (`dynamo.runtime.wire.ErrorCode`) to HTTP.
"""

from __future__ import annotations

import logging
from typing import Any

from dynamo.llm.preprocessor import ContextOverflow, PreprocessError
from dynamo.runtime.rp_client import StreamError, StreamTimeout
from dynamo.runtime.wire import ErrorCode

log = logging.getLogger(__name__)

ALL_BUSY_MESSAGE = "Service temporarily unavailable: all workers are busy, please retry later"
# Not an IANA status but the de-facto "overloaded, back off" one (`--http-overload-status-code`
# may make the frontend's own concurrency limit answer 503 instead).
OVERLOADED_STATUS = 529


class ApiError(Exception):
    """An error with an OpenAI-shaped body and an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        # A prompt over the context: the numbers, for APIs whose clients parse their own message.
        self.overflow: ContextOverflow | None = None
        self.retry_after: int | None = None  # seconds, sent as Retry-After where the client should come back

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# -- the client's request (4xx) ---------------------------------------------------------------
def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def not_one_of(value: str, supported: tuple[str, ...], param: str) -> ApiError:
    """A value outside a field's set (a message's role), in OpenAI's words; the value cut to 40 characters, since
    a client can send one of any size."""
    shown = value if len(value) <= 40 else value[:40] + "…"
    listed = ", ".join(f"'{v}'" for v in supported[:-1]) + f", and '{supported[-1]}'"
    return bad_request(f"Invalid value: '{shown}'. Supported values are: {listed}.", param, "invalid_value")


def nested_too_deeply() -> ApiError:
    """A body whose JSON nests deeper than a parser recurses (thousands of `[`): refused, not a 500."""
    return bad_request("Malformed JSON body: nested too deeply", None, "invalid_json")


# What a request raises past every route's own checks: nested deeper than a parser recurses, or an
# integer the request plane cannot carry (over 64 bits, in a free-form field). The client's error.
BEYOND_LIMITS = (RecursionError, OverflowError)


def beyond_limits(exc: RecursionError | OverflowError, path: str) -> ApiError:
    """The answer to a request that raised one of `BEYOND_LIMITS`; logged with its traceback, in case it was
    ours."""
    log.warning("request to %s refused: %r", path, exc, exc_info=exc)
    return limits_refusal(exc)


def limits_refusal(exc: RecursionError | OverflowError) -> ApiError:
    """`beyond_limits`' answer, unlogged: what the request metrics count such a request as."""
    if isinstance(exc, RecursionError):
        return nested_too_deeply()
    return bad_request("An integer in the request is out of range (at most 64 bits)")


def bad_prompt(exc: PreprocessError, param: str | None = None) -> ApiError:
    """The 400 for a prompt that cannot be built (`param`: overrides the field it names)."""
    error = bad_request(exc.message, param or exc.param, exc.code)
    error.overflow = exc.overflow
    return error


def model_not_found(model: str) -> ApiError:
    return ApiError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model", "model_not_found")


def worker_not_found(hint: str, instance_id: int, pool: str) -> ApiError:
    """A request pinned (by the `nvext.<hint>` routing hint) to a worker that does not serve `pool`."""
    return bad_request(f"No worker with instance id {instance_id} ({instance_id:x}) serves {pool!r}",
                       f"nvext.{hint}", "worker_not_found")


def no_route(path: str) -> ApiError:
    return ApiError(404, f"no route {path}", "not_found_error", None, "not_found")


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(405, f"method {method} not allowed on {path}", "invalid_request_error", None,
                    "method_not_allowed")


def body_too_large(limit: int, size: int | None = None) -> ApiError:
    """`size`: the declared length, None when the body was cut off while being read."""
    got = f" ({size} bytes)" if size is not None else ""
    return ApiError(413, f"request body{got} exceeds the limit of {limit} bytes", "invalid_request_error", None,
                    "request_too_large")


# -- no capacity now: retry later (503, 529) -------------------------------------------------
def no_workers(model: str, waited: float = 0.0) -> ApiError:
    waiting = f" (waited {waited:g} s for one)" if waited else ""
    return workers_unavailable(f"No workers are available for model {model!r}{waiting}; retry later")


def workers_unavailable(message: str) -> ApiError:
    """No worker to route to, in a router service's own words (ours: `no_workers`)."""
    return ApiError(503, message, "service_unavailable", None, "no_workers")


def all_busy(message: str = ALL_BUSY_MESSAGE) -> ApiError:
    """Every worker is above its busy threshold (`message`: a router service's own wording)."""
    return ApiError(503, message, "service_unavailable", None, "all_workers_busy")


def overloaded(message: str, status: int = OVERLOADED_STATUS) -> ApiError:
    return ApiError(status, message, "overloaded_error", None, "overloaded")


def too_many_requests(status: int = OVERLOADED_STATUS) -> ApiError:
    """The frontend's own concurrency limit (`status`: its configured overload status)."""
    return overloaded("Too many requests in flight; retry later", status)


class CardChanged(ApiError):
    """A rolling update switched the model's card (tokenizer, block size) after this request was prepared for the
    one served then: it would reach workers its tokens were not made for (model_generations.py). `unsent`: nothing
    of its answer has gone to the client yet, so the frontend may prepare it again for the card served now."""

    def __init__(self, model: str, unsent: bool = False) -> None:
        super().__init__(503, f"The workers of model {model!r} changed to another model card while this request was "
                              "prepared; retry", "service_unavailable", None, "model_card_changed")
        self.retry_after = 1
        self.unsent = unsent


def shutting_down() -> ApiError:
    return ApiError(503, "The server is shutting down; retry on another instance", "service_unavailable", None,
                    "shutting_down")


def prefill_unavailable(reason: str) -> ApiError:
    return ApiError(503, f"disaggregated serving is enforced but prefill is unavailable ({reason})",
                    "service_unavailable", None, "prefill_unavailable")


# -- the worker or engine failed (5xx) ------------------------------------------------------
def worker_failed(exc: StreamError) -> ApiError:
    """A worker's error answer with no more specific mapping; its code is passed on."""
    return ApiError(500, f"Worker failed: {exc}", "internal_error", None, str(exc.code))


def worker_timeout(instance_id: int | None, exc: StreamError) -> ApiError:
    """A worker missed a stream deadline. `instance_id` None: a router service's answer, whose
    message already names the worker it chose."""
    message = str(exc) if instance_id is None else f"worker {instance_id:x} timed out: {exc}"
    return ApiError(504, message, "timeout_error", None, "worker_timeout")


def worker_disconnected(instance_id: int) -> ApiError:
    return ApiError(502, f"worker {instance_id:x} disconnected mid-stream", "internal_error", None,
                    "worker_disconnected")


def engine_error(detail: str) -> ApiError:
    """An engine output that carried an error instead of tokens."""
    return ApiError(500, f"engine error: {detail}", "internal_error", None, "engine_error")


def no_embedding() -> ApiError:
    return ApiError(500, "the worker returned no embedding", "internal_error", None, "engine_error")


def from_stream_error(exc: StreamError, model: str | None = None) -> ApiError:
    """A worker's (or router service's) error answer as the client's HTTP error; `model`, where known, names
    the model in a 404."""
    code = exc.code
    if code == ErrorCode.LORA_NOT_LOADED:  # no worker (behind a relay too) holds the LoRA adapter any more
        return model_not_found(model) if model else ApiError(
            404, "The requested model (LoRA adapter) is not loaded on any worker.", "invalid_request_error",
            "model", "model_not_found")
    if code == ErrorCode.OVERLOADED:
        return overloaded(f"Worker overloaded: {exc}")
    if code in (ErrorCode.BAD_REQUEST, ErrorCode.INVALID_REQUEST):
        return bad_request(str(exc), None, "invalid_request")
    if code == ErrorCode.BUSY:
        return all_busy(str(exc))
    if code == ErrorCode.NO_WORKERS:  # a router service in front of the workers found none
        return workers_unavailable(str(exc))
    if code == ErrorCode.TIMEOUT:  # a router service's worker missed its deadline
        return worker_timeout(None, exc)
    return worker_failed(exc)


def worker_lost(instance_id: int, exc: StreamError) -> ApiError:
    """A worker lost mid-way with no migration left. Before any output was sent this is the
    HTTP status; after, the SSE error event (generation.py decides which)."""
    if isinstance(exc, StreamTimeout):
        return worker_timeout(instance_id, exc)
    return worker_disconnected(instance_id)
