"""The frontend's admin API, NVIDIA Dynamo's `/busy_threshold`: an operator reads or changes a
model's busy thresholds on a live frontend, without a restart.

    GET  /busy_threshold                       -> {"thresholds": [{"model", <the three>}, ...]}
    POST /busy_threshold {"model"}             -> {"model", <the three>}   (read)
    POST /busy_threshold {"model", <any of the three>} -> the thresholds now  (set)

The three are `active_decode_blocks_threshold` (fraction of a worker's KV blocks in use),
`active_prefill_tokens_threshold` (tokens) and `active_prefill_tokens_threshold_frac` (fraction of
its `max_num_batched_tokens`); null means off. A set changes only the thresholds it names, as
Dynamo's does, on every pool of the model, and requests waiting in the router queue retry against
them at once. Busy detection is part of KV routing: under another `--router-mode` a set is refused
(404, as Dynamo refuses a model without its load monitor) and reads show nulls.
`DYN_DISABLE_FRONTEND_ADMIN_API` (`--disable-frontend-admin-api`) leaves both routes out (404).
Errors are OpenAI-shaped, as everywhere in this frontend.
"""

from __future__ import annotations

import logging
from typing import Awaitable, Callable

import msgspec

from dynamo.frontend.errors import ApiError, bad_request, model_not_found
from dynamo.frontend.openai import decode_body
from dynamo.router.selector import BusyThresholds
from dynamo.runtime.asgi import send_json

log = logging.getLogger(__name__)
PATH = "/busy_threshold"


class BusyThresholdRequest(msgspec.Struct, kw_only=True):
    model: str
    active_decode_blocks_threshold: float | None = None
    active_prefill_tokens_threshold: int | None = None
    active_prefill_tokens_threshold_frac: float | None = None

    def update(self) -> BusyThresholds:
        return BusyThresholds(self.active_decode_blocks_threshold, self.active_prefill_tokens_threshold,
                              self.active_prefill_tokens_threshold_frac)


_decoder = msgspec.json.Decoder(BusyThresholdRequest)


def threshold_body(model: str, thresholds: BusyThresholds | None) -> dict:
    t = thresholds or BusyThresholds()
    return {"model": model, "active_decode_blocks_threshold": t.active_decode_blocks,
            "active_prefill_tokens_threshold": t.active_prefill_tokens,
            "active_prefill_tokens_threshold_frac": t.active_prefill_tokens_frac}


def parse_request(body: bytes) -> BusyThresholdRequest:
    """The request, or the client's 400 naming what is wrong."""
    req = decode_body(_decoder, body)
    if not req.model:
        raise bad_request("`model` must be a non-empty string", "model")
    problem = req.update().problem()
    if problem is not None:
        raise bad_request(f"`{problem[0]}` {problem[1]}", problem[0])
    return req


class BusyThresholdAdmin:
    """The two routes over the routing policy (owner of the thresholds) and the served models."""

    def __init__(self, policy, models, read_body: Callable[[dict, Callable], Awaitable[bytes]]) -> None:
        self.policy = policy
        self.models = models
        self.read_body = read_body

    def routes(self) -> dict[tuple[str, str], Callable]:
        return {("GET", PATH): self.list, ("POST", PATH): self.get_or_set}

    async def list(self, scope, receive, send) -> None:
        names = sorted(entry.name for entry in self.models.models.values())
        await send_json(send, 200, {"thresholds": [threshold_body(n, self.policy.busy_thresholds(n)) for n in names]})

    async def get_or_set(self, scope, receive, send) -> None:
        req = parse_request(bytes(await self.read_body(scope, receive)))
        update = req.update()
        served = self.models.get(req.model) is not None
        if not update.enabled:  # a read: a model not served here has no thresholds (nulls, as Dynamo answers)
            await send_json(send, 200, threshold_body(req.model, self.policy.busy_thresholds(req.model)
                                                      if served else None))
            return
        if not served:
            raise model_not_found(req.model)
        thresholds = self.policy.set_busy_thresholds(req.model, update)
        if thresholds is None:
            raise ApiError(404, f"Busy thresholds of `{req.model}` cannot be set: busy detection is part of KV "
                                "routing (start the frontend with --router-mode kv)", "invalid_request_error",
                           "model", "busy_thresholds_unavailable")
        log.info("busy thresholds of %s updated: %s", req.model, thresholds)
        await send_json(send, 200, threshold_body(req.model, thresholds))
