"""Routing hints a client sends with a request, as NVIDIA Dynamo's frontend takes them: the
`nvext` fields `backend_instance_id`, `prefill_worker_id`, `decode_worker_id` (pin a request to
workers) and `agent_hints.priority` / `agent_hints.strict_priority` (order the router queue),
and the headers that override them (`x-worker-instance-id`, `x-prefill-instance-id`, `x-dp-rank`,
`x-prefill-dp-rank`, each also spelled `x-dynamo-...`, and `x-dynamo-request-priority`,
`x-dynamo-request-strict-priority`). A malformed hint is the client's error: a 400 naming it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from dynamo.frontend.errors import bad_request
from dynamo.llm.protocol import RoutingHints

# hint field -> the headers that set it (an x-dynamo- spelling wins over the plain one)
HEADERS = {
    "backend_instance_id": ("x-worker-instance-id", "x-dynamo-worker-instance-id"),
    "prefill_worker_id": ("x-prefill-instance-id", "x-dynamo-prefill-instance-id"),
    "dp_rank": ("x-dp-rank", "x-dynamo-dp-rank"),
    "prefill_dp_rank": ("x-prefill-dp-rank", "x-dynamo-prefill-dp-rank"),
    "priority": ("x-dynamo-request-priority",),
    "strict_priority": ("x-dynamo-request-strict-priority",),
}
NVEXT_IDS = ("backend_instance_id", "prefill_worker_id", "decode_worker_id")
AGENT_HINTS = ("priority", "strict_priority")


def routing_hints(nvext: dict[str, Any] | None, headers: Iterable[tuple[bytes, bytes]]) -> RoutingHints | None:
    """The request's routing hints, or None when it gives none."""
    values: dict[str, Any] = {}
    ext = nvext or {}
    for name in NVEXT_IDS:
        if ext.get(name) is not None:
            values[name] = _unsigned(ext[name], f"nvext.{name}")
    agent = ext.get("agent_hints")
    if agent is not None and not isinstance(agent, dict):
        raise bad_request("nvext.agent_hints must be an object", "nvext.agent_hints", "invalid_type")
    for name in AGENT_HINTS:
        if agent and agent.get(name) is not None:
            values[name] = _parse(name, agent[name], f"nvext.agent_hints.{name}")
    given = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in headers}
    for name, spellings in HEADERS.items():
        for header in spellings:  # later spellings win
            if header in given:
                values[name] = _parse(name, given[header], header)
    return RoutingHints(**values) if values else None


def _parse(name: str, raw: Any, param: str) -> int | float:
    return _number(raw, param) if name == "priority" else _unsigned(raw, param)


def _unsigned(raw: Any, param: str) -> int:
    try:
        value = int(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise bad_request(f"{param} must be an unsigned integer, got {raw!r}", param, "invalid_type")
    return value


def _number(raw: Any, param: str) -> float:
    try:
        value = float(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{param} must be a number, got {raw!r}", param, "invalid_type")
    return float(value)
