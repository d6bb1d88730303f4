"""The frontend's side of the bound on what a request's worker streams hold for a client that does not
keep up (`dynamo.runtime.rp_backlog`): its limit, the `send` that tells the bound when the request waits on
its client, and what follows a cut: a warning naming the request, the request counted as cancelled (the
worker was told to stop, as for a client that hung up), the freed memory given back to the OS, and the
error event the stream ends with, should the client ever read that far."""

from __future__ import annotations

import logging
import time
from typing import Callable

from dynamo.frontend.errors import ApiError
from dynamo.runtime.rp_backlog import Backlog

log = logging.getLogger(__name__)

# Undelivered worker output one request may hold while its client does not keep up, in MiB as the workers
# sent it (an SSE client reads 3-5 times as much): ~50,000 tokens with 20 top logprobs each, over a million
# without. Past it, a request whose client has taken nothing for `rp_backlog.STALL_GRACE` seconds (or that
# is `HARD_FACTOR` times over and waits on its client at all) is cut. n=128 x top_logprobs 20 streamed to a
# client that reads at once peaked at 15 MiB on a busy 2-core frontend (the frontend, not its client,
# was behind): not cut, and its client never waits that long.
STREAM_BACKLOG_MB = 16.0


def limit_of(app) -> int:
    """The app's limit in bytes (`--http-stream-backlog-limit-mb`, where the app was given it)."""
    return int(app.stream_backlog_mb * 2**20)


def on_cut(app, request_id: str, model: str, endpoint: str, request_type: str) -> Callable[[Backlog], None]:
    """What follows when a request's streams are cut (its `Backlog.on_trip`): it holds no reference to the
    request's run, which would make the two a cycle, alive until a full collection."""
    def cut(backlog: Backlog) -> None:
        log.warning("request %s: its client fell too far behind (%.1f MiB of the response undelivered, limit %g "
                    "MiB): cancelled at its workers", request_id, backlog.peak / 2**20, backlog.limit / 2**20)
        app.metrics.cancellations.labels(model, endpoint, request_type).inc()
        app.trimmer.schedule()
    return cut


def watched(send: Callable, backlog: Backlog) -> Callable:
    """`send` that tells the backlog since when it waits: the ASGI server's send waits only when the client
    has not taken what was sent before (flow control); one that does not wait is over before any worker
    output can arrive."""
    async def send_watched(message: dict) -> None:
        backlog.waiting_since = time.monotonic()
        backlog.sends += 1
        try:
            await send(message)
        finally:
            backlog.waiting_since = None
    return send_watched


def fell_behind(backlog: Backlog) -> ApiError:
    return ApiError(503, f"The client fell too far behind reading this stream: more than {backlog.limit / 2**20:g} "
                         "MiB of it waited undelivered, so the request was cancelled", "service_unavailable", None,
                    "stream_backlog_exceeded")
