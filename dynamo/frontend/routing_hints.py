"""Routing hints a client sends with a request, as NVIDIA Dynamo's frontend takes them: the
`nvext` fields `backend_instance_id`, `prefill_worker_id`, `decode_worker_id` (pin a request to
workers) and `agent_hints.priority` / `agent_hints.strict_priority` (order the router queue),
and the headers that override them (`x-worker-instance-id`, `x-prefill-instance-id`, `x-dp-rank`,
`x-prefill-dp-rank`, each also spelled `x-dynamo-...`, and `x-dynamo-request-priority`,
`x-dynamo-request-strict-priority`), and the agent session identity (`x-dynamo-session-id`,
`x-dynamo-parent-session-id`, `x-dynamo-session-final`, or the coding agents' own headers when the
canonical one is absent). A malformed hint is the client's error: a 400 naming it.
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
SESSION_ID_MAX_BYTES = 256  # as NVIDIA Dynamo: a longer id is refused, never truncated into another's
SESSION_FINAL = "x-dynamo-session-final"
# (session header, parent header(s) in order) per client; the first whose session header is present
# wins, so the canonical Dynamo headers win over the agent-native ones.
SESSION_SOURCES = (
    ("x-dynamo-session-id", ("x-dynamo-parent-session-id",)),
    # Claude Code: a child agent's turns carry its agent id; its parent is the parent agent, else the root session.
    ("x-claude-code-agent-id", ("x-claude-code-parent-agent-id", "x-claude-code-session-id")),
    ("x-claude-code-session-id", ()),
    ("session-id", ()),  # Codex
    ("x-session-id", ("x-parent-session-id",)),  # OpenCode
)


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
    values.update(session_identity(given))
    return RoutingHints(**values) if values else None


def session_identity(given: dict[str, str]) -> dict[str, Any]:
    """The agent session fields from the request's headers (lower-cased names): empty without a session."""
    for header, parents in SESSION_SOURCES:
        sid = _session_id(given, header)
        if sid is None:
            continue
        values: dict[str, Any] = {"session_id": sid}
        parent = next((p for p in (_session_id(given, h) for h in parents) if p is not None), None)
        if parent is not None:
            values["parent_session_id"] = parent
        if _final(given):
            values["session_final"] = True
        return values
    return {}


def _session_id(given: dict[str, str], header: str) -> str | None:
    raw = given.get(header, "").strip()
    if not raw:
        return None
    if len(raw.encode("latin-1")) > SESSION_ID_MAX_BYTES:  # header bytes, as sent
        raise bad_request(f"{header} is longer than {SESSION_ID_MAX_BYTES} bytes", header, "invalid_value")
    return raw


def _final(given: dict[str, str]) -> bool:
    raw = given.get(SESSION_FINAL, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise bad_request(f"{SESSION_FINAL} must be true or false, got {raw!r}", SESSION_FINAL, "invalid_value")


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
