"""Canary health checks (NVIDIA Dynamo's, `DYN_HEALTH_CHECK_ENABLED`; its operator turns them on in every pod):
a worker whose engine has made no progress for `DYN_CANARY_WAIT_TIME` s (10) sends it a one-token request and
waits up to `DYN_HEALTH_CHECK_REQUEST_TIMEOUT` s (3) for it. A canary that fails or times out marks the endpoint
`notready`, so `/health` answers 503 and the pod's readiness probe takes it out of its Service (and, with
Kubernetes discovery, out of routing) while the engine is hung; the next canary that succeeds, or the next
progress the engine makes, marks it ready again (as Dynamo, whose canary timer is reset by every response chunk).

Progress is streamed output, and, from an engine that reports its steps (`EngineInfo.reports_steps`: the mocker,
vLLM's forward-pass stat logger), each forward pass or KV event: a long chunked prefill runs many steps without
output, and the canary would wait behind it.

When it is probed:
- idle (nothing in flight) for the wait time: as Dynamo, a quiet engine is checked now and then;
- busy, but no progress at all for the wait time since it last progressed or went busy (requests in flight,
  none moving: a hung engine, e.g. its EngineCore stopped), only for an engine that reports its steps; one that
  does not (SGLang, TRT-LLM here) is probed idle only, as Dynamo's canaries, since its output alone cannot tell
  a long prefill from a hang. Arriving requests do not count as progress: a hung engine keeps receiving them. A
  busy engine that progresses is never probed, so a canary queued behind a healthy batch cannot time out and
  mark it unhealthy. Probes of a stalled engine repeat every wait time; the canary is not refused by
  `--engine-request-limit`.

After LEAVE_AFTER_FAILURES failed canaries in a row the endpoint also leaves discovery (its instance and model
card records, `DiscoveryMembership`), so routers stop sending it requests, and it rejoins with the same records
when it is ready again. That is what Kubernetes discovery does through the pod's readiness (records are seen
only while the pod is ready), so there it is left to Kubernetes; with etcd or file discovery NVIDIA Dynamo keeps
a hung worker listed and routed to, which is the gap this closes.

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
from dynamo.runtime.discovery.base import KeyValueStore
from dynamo.runtime.rp_server import RequestContext
from dynamo.runtime.settings import RuntimeSettings
from dynamo.runtime.system_server import HealthState
from dynamo.worker.requests import RequestHandler

log = logging.getLogger("dynamo.worker.canary")

LEAVE_AFTER_FAILURES = 2  # one failure turns /health 503; a second in a row takes the endpoint out of discovery


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


class DiscoveryMembership:
    """An endpoint's discovery records, taken out while the canary finds its engine hung and put back, as they
    were, once it is ready again. Store errors are logged (once per outage) and retried at the next check, never
    raised: only records actually deleted are held, and a leave cut short is finished by the next one."""

    def __init__(self, store: KeyValueStore, keys: list[str]) -> None:
        self.store, self.keys = store, keys
        self.held: dict[str, bytes] = {}  # the records taken out
        self.out = False  # every record is out (held, or absent from the store)
        self.errors = 0  # store errors in a row

    async def leave(self) -> None:
        if self.out:
            return
        try:
            for key in self.keys:
                if key not in self.held:
                    await self._take(key)
        except Exception as exc:  # etcd unreachable: the next check takes out the rest
            self._store_error("leaving", exc)
            return
        self.out, self.errors = True, 0
        log.warning("engine hung: %d discovery record(s) withdrawn until it is ready again", len(self.held))

    async def _take(self, key: str) -> None:
        value = await self.store.get(key)
        if value is not None:
            await self.store.delete(key)
            self.held[key] = value

    async def rejoin(self) -> None:
        if not self.out and not self.held:
            return
        try:
            for key, value in list(self.held.items()):
                await self.store.put(key, value)
                del self.held[key]
        except Exception as exc:
            self._store_error("rejoining", exc)
            return
        self.out, self.errors = False, 0
        log.info("engine ready again: back in discovery")

    def _store_error(self, doing: str, exc: Exception) -> None:
        self.errors += 1
        log.log(logging.WARNING if self.errors == 1 else logging.DEBUG,
                "%s discovery (retried at each check; said once): %s", doing, exc)


class Canary:
    """Probes one endpoint's engine when it is idle or stalled; the one writer of that endpoint's health while it
    runs."""

    def __init__(self, handler: RequestHandler, health: HealthState, endpoint: str, request: PreprocessedRequest,
                 wait: float, timeout: float, registry: CollectorRegistry,
                 membership: DiscoveryMembership | None = None, busy_probes: bool = True) -> None:
        self.handler, self.health, self.endpoint, self.request = handler, health, endpoint, request
        self.membership = membership  # None: discovery follows /health by itself (Kubernetes)
        self.busy_probes = busy_probes  # False: the engine reports no steps, so it is probed idle only
        self.wait, self.timeout = wait, timeout
        self.failures = 0
        self.probed_at = time.monotonic()  # when the last canary ended
        self.failed_at = 0.0  # when the last failed canary ended
        self._ids = itertools.count(1)
        self._checks = Counter("dynamo_component_canary_health_checks", "Canary requests sent to this worker's "
                               "idle or stalled engine, by result", ["result"], registry=registry)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.wait / 2))
            now = time.monotonic()
            if self.failures and self.handler.last_progress > self.failed_at:
                self._ready("the engine made progress")
            elif self.due(now):
                if self.handler.inflight:  # said once per outage: a stalled engine is probed every wait time
                    log.log(logging.DEBUG if self.failures else logging.WARNING, "%s: no engine progress for %.1fs "
                            "with %d request(s) in flight; sending a canary", self.endpoint,
                            self.handler.stalled_for(now), self.handler.inflight)
                self._record(await self.probe())
                self.probed_at = time.monotonic()
            await self._follow_health()

    async def _follow_health(self) -> None:
        """Discovery follows the canary: out after LEAVE_AFTER_FAILURES failures in a row, back once ready."""
        if self.membership is None:
            return
        if self.failures >= LEAVE_AFTER_FAILURES:
            await self.membership.leave()
        elif not self.failures:
            await self.membership.rejoin()

    def due(self, now: float) -> bool:
        """Idle for the wait time, or busy without any progress for the wait time (and not probed within it),
        where the engine reports its steps."""
        handler = self.handler
        if handler.inflight:
            return self.busy_probes and handler.stalled_for(now) >= self.wait and now - self.probed_at >= self.wait
        return now - handler.last_activity >= self.wait

    async def probe(self) -> str | None:
        """None when the engine answered in time, else why not."""
        request = msgspec.structs.replace(self.request, request_id=f"health-check-{next(self._ids)}")
        ctx = RequestContext(0, "health_check", None)
        try:
            async with asyncio.timeout(self.timeout):
                async for out in self.handler.generate(request, ctx, probe=True):
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
        self._checks.labels("ok" if failure is None else "failed").inc()
        if failure is None:
            self._ready("canary health check passed")
            return
        was_ready = self.health.endpoints.get(self.endpoint) == "ready"
        self.failures += 1
        self.failed_at = time.monotonic()
        self.health.endpoints[self.endpoint] = "notready"
        level = logging.WARNING if was_ready or self.failures == 1 else logging.DEBUG
        log.log(level, "canary health check of %s failed (%s): /health answers 503 until one passes or the engine "
                "makes progress", self.endpoint, failure)

    def _ready(self, why: str) -> None:
        if self.health.endpoints.get(self.endpoint) != "ready":
            log.info("%s: %s; ready again", self.endpoint, why)
        self.health.endpoints[self.endpoint] = "ready"
        self.failures = 0
