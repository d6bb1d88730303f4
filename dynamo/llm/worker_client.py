"""Caller side of a worker's `generate` endpoint: the one place that sends a
`PreprocessedRequest` to a worker over the request plane, relays its outputs in batches
(decoded once, here), enforces the optional deadlines, and cancels the worker's stream
when the caller stops early, is cancelled, or times out.

Failures stay typed (`CannotConnect` at open; `Disconnected`, `StreamTimeout` or another
`StreamError` while relaying) so each caller keeps its own policy: the frontend migrates,
the router service retries before the first output, the prefill orchestrator falls back to
local prefill. Routing bookkeeping (select -> book -> first output -> free) stays with the
callers too, which own the booking; `on_first_output` is their hook for the middle step.

Deadlines (both off by default, since a long prefill can legitimately take minutes):
- `first_output`: seconds from sending the request to its first output;
- `idle`: the longest gap between two outputs once the first has arrived (not before it,
  so a small idle deadline does not cut a long prefill short).
`StreamDeadlineSettings` is their config side (`--first-token-timeout-secs`,
`--stream-idle-timeout-secs`), one declaration for every component that calls workers
through this client (the frontend, the router service).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Callable

from dynamo.llm.protocol import LLMEngineOutput, PreprocessedRequest, output_decoder, request_encoder
from dynamo.runtime.config import setting
from dynamo.runtime.rp_client import RequestPlaneClient, ResponseStream, StreamTimeout
from dynamo.runtime.rp_server import RequestContext

_decode = output_decoder.decode


@dataclass(frozen=True)
class Deadlines:
    first_output: float | None = None
    idle: float | None = None


NO_DEADLINES = Deadlines()


@dataclass
class StreamDeadlineSettings:
    """Config mixin: the deadlines on worker streams, off by default (a long prefill can
    legitimately take minutes). A stream that misses one is cancelled and reported as a
    `StreamTimeout`; what follows (migrate, 504, a typed error) is the caller's policy."""

    first_token_timeout_secs: float | None = setting(
        None, "Seconds a worker may take to send a request's first output (default: no deadline)")
    stream_idle_timeout_secs: float | None = setting(
        None, "Longest gap in seconds between a worker's outputs after the first (default: no deadline)")

    def deadlines(self) -> Deadlines:
        return Deadlines(first_output=self.first_token_timeout_secs, idle=self.stream_idle_timeout_secs)

    def check_deadlines(self) -> None:
        """ValueError unless each deadline that is set is positive (0 would fail every request)."""
        for name in ("first_token_timeout_secs", "stream_idle_timeout_secs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive")


class WorkerStream:
    """One request's outputs from one worker. Iterate it for decoded batches (everything that
    arrived together), or call `next_payloads()` to relay the raw frames unchanged; either
    way the deadlines apply. `cancel()` (idempotent) stops the worker; `async with` does it
    on exit."""

    __slots__ = ("_stream", "_deadlines", "_first_by", "_on_first", "started")

    def __init__(self, stream: ResponseStream, deadlines: Deadlines = NO_DEADLINES,
                 on_first_output: Callable[[], object] | None = None) -> None:
        self._stream = stream
        self._deadlines = deadlines
        limit = deadlines.first_output
        self._first_by = None if limit is None else asyncio.get_running_loop().time() + limit
        self._on_first = on_first_output
        self.started = False  # the first output has arrived

    def _wait_limit(self) -> float | None:
        if self.started:
            return self._deadlines.idle
        if self._first_by is None:
            return None
        return max(0.0, self._first_by - asyncio.get_running_loop().time())

    async def next_payloads(self) -> list[bytes]:
        """The encoded outputs that arrived since the last call ([] at the normal end)."""
        try:
            batch = await self._stream.next_batch(self._wait_limit())
        except StreamTimeout:
            # The worker may be hung, not gone: tell it to stop, or it runs on for nobody.
            self.cancel()
            raise StreamTimeout(self._timeout_message()) from None
        if batch and not self.started:
            self.started = True
            if self._on_first is not None:
                self._on_first()
        return batch

    def _timeout_message(self) -> str:
        if self.started:
            return f"no output for {self._deadlines.idle:g} s (stream idle deadline)"
        return f"no first output within {self._deadlines.first_output:g} s (first-output deadline)"

    def __aiter__(self) -> "WorkerStream":
        return self

    async def __anext__(self) -> list[LLMEngineOutput]:
        payloads = await self.next_payloads()
        if not payloads:
            raise StopAsyncIteration
        return [_decode(p) for p in payloads]

    def cancel(self) -> None:
        """Tell the worker to stop (its handler sees CancelledError); a no-op once ended."""
        self._stream.cancel()

    def stop(self) -> None:
        """cancel() for a caller that has what it needs (a stop string matched): the worker stops the same way
        but does not count the request as cancelled (Dynamo's `stop_generating`)."""
        self._stream.stop()

    def end_as(self, ctx: RequestContext) -> None:
        """For a relay (the router service, the global router): end this stream the way its own caller ended the
        relay's, a graceful stop passed on as a stop (or the worker counts a cancellation), a kill, an error or
        the normal end as cancel()."""
        if ctx.is_stopped() and not ctx.is_killed():
            self.stop()
        else:
            self.cancel()

    async def __aenter__(self) -> "WorkerStream":
        return self

    async def __aexit__(self, *exc_info) -> None:
        self.cancel()


class WorkerClient:
    """Sends requests to workers' generate endpoints over one request-plane client, each
    stream under the same deadlines."""

    def __init__(self, client: RequestPlaneClient, deadlines: Deadlines = NO_DEADLINES) -> None:
        self.client = client
        self.deadlines = deadlines

    async def open(self, address: str, endpoint: str, request: PreprocessedRequest | bytes,
                   on_first_output: Callable[[], object] | None = None) -> WorkerStream:
        """Send `request` (bytes: already encoded, sent as is, e.g. a router relaying its caller's
        payload); raises `CannotConnect` when it could not reach the worker."""
        payload = request if isinstance(request, bytes) else request_encoder.encode(request)
        stream = await self.client.open_stream(address, endpoint, payload)
        return WorkerStream(stream, self.deadlines, on_first_output)
