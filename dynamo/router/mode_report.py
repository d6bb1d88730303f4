"""The KV routing mode in effect for one pool and why: one rule for every host (the frontend
and the `dynamo.router` service), computed from the configured mode, which workers say they
publish KV events, and what the event plane has actually delivered.

A mode is stated, never silently degraded: anything less than configured is `degraded`, and
its host logs it as a WARNING and shows it in `/health`.
"""

from __future__ import annotations

import dataclasses
from typing import Collection

from dynamo.router.config import KvMode
from dynamo.router.policy import WorkerInfo


@dataclasses.dataclass(frozen=True)
class ModeReport:
    mode: KvMode
    reason: str
    degraded: bool  # less than configured: worth a WARNING


def mode_report(configured: KvMode, workers: tuple[WorkerInfo, ...], event_plane_down: bool = False,
                silent: Collection[int] = (), plane: str = "the event plane") -> ModeReport:
    """`silent`: workers that were routed requests yet have sent nothing (no KV event, no load
    metrics) over `plane` since they were tracked: they publish elsewhere (another event plane)
    or not at all, so their caches cannot be indexed from events."""
    total = len(workers)
    publishing = [w for w in workers if w.publishes_kv_events]
    if configured == KvMode.LOAD_ONLY:
        return ModeReport(KvMode.LOAD_ONLY, "no cache credit (--kv-overlap-score-weight 0, "
                          "--router-kv-overlap-score-credit 0 or --load-aware): load balancing only", False)
    if configured == KvMode.APPROXIMATE:
        return ModeReport(KvMode.APPROXIMATE, "--no-router-kv-events: caches predicted from routing decisions", False)
    if total and not publishing:
        return ModeReport(KvMode.APPROXIMATE, f"none of the {total} worker(s) publishes KV events (prefix caching "
                          "off?): caches predicted from routing decisions", True)
    if event_plane_down:
        return ModeReport(KvMode.APPROXIMATE, "event plane unreachable: caches predicted from routing decisions",
                          True)
    quiet = sum(1 for w in publishing if w.instance_id in silent)
    hint = (f"nothing received over {plane} although requests were routed to them (are they on another "
            "event plane? --event-plane / DYN_EVENT_PLANE must match on the frontend and the workers)")
    if publishing and quiet == len(publishing):
        return ModeReport(KvMode.APPROXIMATE, f"{quiet} of {len(publishing)} worker(s) publishing KV events: "
                          f"{hint}: caches predicted from routing decisions", True)
    if len(publishing) < total:
        also = f"; {quiet} of them: {hint}" if quiet else ""
        return ModeReport(KvMode.KV_EVENTS, f"only {len(publishing)} of {total} workers publish KV events{also}",
                          True)
    if quiet:
        return ModeReport(KvMode.KV_EVENTS, f"{quiet} of {total} workers: {hint}", True)
    return ModeReport(KvMode.KV_EVENTS, f"all {total} worker(s) publish KV events", False)
