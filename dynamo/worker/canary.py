"""Canary health checks (NVIDIA Dynamo's, `DYN_HEALTH_CHECK_ENABLED`; its operator turns them on in every pod):
a worker whose endpoint has been idle for `DYN_CANARY_WAIT_TIME` s (10) sends its own engine a one-token request
and waits up to `DYN_HEALTH_CHECK_REQUEST_TIMEOUT` s (3) for it. A canary that fails or times out marks the
endpoint `notready`, so `/health` answers 503 and the pod's readiness probe takes it out of its Service (and,
with Kubernetes discovery, out of routing) while the engine is hung; the next canary that succeeds marks it
ready again. Only an idle engine is probed: a busy one is answering requests, and a canary queued behind
them could time out while the engine is healthy.

The request is `DYN_HEALTH_CHECK_PAYLOAD` (or `--health-check-payload`): a JSON object in the shape of the
worker's request (`token_ids`, `stop_conditions`, `sampling_options`), or `@path` to a file holding one;
by default the model's BOS token, one greedy token, as Dynamo's default payload.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter

from dynamo.llm.protocol import PreprocessedRequest, SamplingOptions, StopConditions
from dynamo.runtime.rp_server import RequestContext
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.system_server import HealthState
from dynamo.worker.requests import RequestHandler

log = logging.getLogger("dynamo.worker.canary")


def payload(settings: RuntimeSettings, model: str, model_dir: str | None) -> PreprocessedRequest:
    """The canary request: the configured payload, else one greedy token after the model's BOS token."""
    given = _configured(settings.health_check_payload)
    fields: dict[str, Any] = {"token_ids": [_bos(model_dir)], "stop_conditions": {"max_tokens": 1},
                              "sampling_options": {"temperature": 0.0}}
    if given is not None:
        fields.update({k: v for k, v in given.items() if k in ("token_ids", "stop_conditions", "sampling_options")})
    try:
        return PreprocessedRequest(request_id="health-check", model=model, token_ids=list(fields["token_ids"]),
                                   stop_conditions=msgspec.convert(fields["stop_conditions"], StopConditions),
                                   sampling_options=msgspec.convert(fields["sampling_options"], SamplingOptions))
    except (msgspec.ValidationError, TypeError) as exc:
        raise ValueError(f"DYN_HEALTH_CHECK_PAYLOAD: {exc}") from None


def _configured(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
        found = json.loads(text)
    except (OSError, ValueError) as exc:
        raise ValueError(f"DYN_HEALTH_CHECK_PAYLOAD: {exc}") from None
    if not isinstance(found, dict):
        raise ValueError("DYN_HEALTH_CHECK_PAYLOAD must be a JSON object")
    return found


def _bos(model_dir: str | None) -> int:
    try:
        found = json.loads((Path(model_dir or "") / "config.json").read_text()).get("bos_token_id")
    except (OSError, ValueError):
        found = None
    if isinstance(found, list):
        found = found[0] if found else None
    return found if isinstance(found, int) else 1  # Dynamo's fallback


class Canary:
    """Probes one idle endpoint's engine; the one writer of that endpoint's health while it runs."""

    def __init__(self, handler: RequestHandler, health: HealthState, endpoint: str, request: PreprocessedRequest,
                 wait: float, timeout: float, registry: CollectorRegistry) -> None:
        self.handler, self.health, self.endpoint, self.request = handler, health, endpoint, request
        self.wait, self.timeout = wait, timeout
        self.failures = 0
        self._ids = itertools.count(1)
        self._checks = Counter("dynamo_component_canary_health_checks", "Canary requests sent to this idle worker's "
                               "engine, by result", ["result"], registry=registry)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.wait / 2))
            if self.handler.inflight or time.monotonic() - self.handler.last_activity < self.wait:
                continue
            self._record(await self.probe())

    async def probe(self) -> str | None:
        """None when the engine answered in time, else why not."""
        request = msgspec.structs.replace(self.request, request_id=f"health-check-{next(self._ids)}")
        ctx = RequestContext(0, "health_check", None)
        try:
            async with asyncio.timeout(self.timeout):
                async for out in self.handler.generate(request, ctx):
                    if out.error is not None:
                        return f"engine error: {out.error}"
                    if out.finish_reason is not None or out.token_ids:
                        return None
            return "the engine ended the stream without a token"
        except TimeoutError:
            return f"no answer within {self.timeout:g} s"
        except Exception as exc:  # the engine refused or crashed on the canary: unhealthy, said below
            return f"{type(exc).__name__}: {exc}"

    def _record(self, failure: str | None) -> None:
        was_ready = self.health.endpoints.get(self.endpoint) == "ready"
        self._checks.labels("ok" if failure is None else "failed").inc()
        if failure is None:
            if not was_ready:
                log.info("canary health check of %s passed: ready again", self.endpoint)
            self.health.endpoints[self.endpoint] = "ready"
            self.failures = 0
            return
        self.failures += 1
        self.health.endpoints[self.endpoint] = "notready"
        level = logging.WARNING if was_ready or self.failures == 1 else logging.DEBUG
        log.log(level, "canary health check of %s failed (%s): /health answers 503 until one passes",
                self.endpoint, failure)
