"""Routing hints a client sends with a request, as NVIDIA Dynamo's frontend takes them: the
`nvext` fields `backend_instance_id`, `prefill_worker_id`, `decode_worker_id` (pin a request to
workers) and `agent_hints.priority` / `agent_hints.strict_priority` (order the router queue),
and the headers that override them (`x-worker-instance-id`, `x-prefill-instance-id`, `x-dp-rank`,
`x-prefill-dp-rank`, each also spelled `x-dynamo-...`, and `x-dynamo-request-priority`,
`x-dynamo-request-strict-priority`), and the agent session identity (`x-dynamo-session-id`,
`x-dynamo-parent-session-id`, `x-dynamo-session-final`, or the coding agents' own headers when the
canonical one is absent), or `nvext.session_control` (`session_id`, `action` open|bind|close,
`timeout`), by which a client asks for affinity itself, and `agent_hints.osl` (the answer's expected
length), and the KV-cache namespace: `nvext.cache_salt` (vLLM's top-level `cache_salt` too), which a
non-empty `x-tenant-id` header overrides. A malformed hint is the client's error: a 400 naming it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from dynamo.frontend.errors import bad_request
from dynamo.llm.protocol import BACKGROUND_TIER, RoutingHints
from dynamo.router.session_affinity import MAX_TTL_SECS

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
AGENT_HINTS = ("priority", "strict_priority", "osl", "latency_sensitivity")
SESSION_ACTIONS = ("open", "bind", "close")  # open/bind (re)bind with the timeout; close ends after this request
SESSION_TIMEOUT_SECS = 300  # nvext.session_control.timeout's default, as NVIDIA Dynamo
SESSION_ID_MAX_BYTES = 256  # as NVIDIA Dynamo: a longer id is refused, never truncated into another's
SESSION_FINAL = "x-dynamo-session-final"
TENANT_HEADER = "x-tenant-id"
CACHE_SALT_MAX_BYTES = 1024  # a namespace name, not a payload
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


def routing_hints(nvext: dict[str, Any] | None, headers: Iterable[tuple[bytes, bytes]],
                  body_cache_salt: Any = None, background: bool = False) -> RoutingHints | None:
    """The request's routing hints, or None when it gives none. `body_cache_salt`: the request's
    top-level `cache_salt` (vLLM's spelling), which `nvext.cache_salt` overrides. `background` (a
    Batch API request): its tier is BACKGROUND_TIER whatever strict tier it names, so that it yields
    to every client's request; its soft priority still orders it among background requests."""
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
    if ext.get("session_control") is not None:
        values.update(session_control(ext["session_control"]))
        values["session_final"] = values.get("session_final", False) or _final(given)
    salt = cache_salt(ext.get("cache_salt"), body_cache_salt, given)
    if salt is not None:
        values["cache_salt"] = salt
    if background:
        values["strict_priority"] = BACKGROUND_TIER
    return RoutingHints(**values) if values else None


def cache_salt(nvext_salt: Any, body_salt: Any, given: dict[str, str]) -> str | None:
    """The request's KV namespace: a non-empty `x-tenant-id` header, else `nvext.cache_salt`, else the
    top-level `cache_salt`; empty values count as absent (trimmed, as the header is)."""
    header = given.get(TENANT_HEADER, "").strip()
    if header:
        return _check_salt(header, TENANT_HEADER)
    for raw, param in ((nvext_salt, "nvext.cache_salt"), (body_salt, "cache_salt")):
        if raw is None:
            continue
        if not isinstance(raw, str):
            raise bad_request(f"{param} must be a string, got {type(raw).__name__}", param, "invalid_type")
        if raw.strip():
            return _check_salt(raw, param)
    return None


def _check_salt(salt: str, param: str) -> str:
    if len(salt.encode()) > CACHE_SALT_MAX_BYTES:
        raise bad_request(f"{param} is longer than {CACHE_SALT_MAX_BYTES} bytes", param, "invalid_value")
    return salt


def session_control(raw: Any) -> dict[str, Any]:
    """`nvext.session_control`: its session id wins over a session header's (a parent named by header
    stays); `open`/`bind` set the binding's idle timeout, `close` makes this the session's last request."""
    param = "nvext.session_control"
    if not isinstance(raw, dict):
        raise bad_request(f"{param} must be an object", param, "invalid_type")
    sid = raw.get("session_id")
    if not isinstance(sid, str) or not sid.strip():
        raise bad_request(f"{param}.session_id must be a non-empty string", f"{param}.session_id", "invalid_value")
    _check_session_id_length(len(sid.encode()), f"{param}.session_id")
    action = raw.get("action")
    if action is not None and action not in SESSION_ACTIONS:
        raise bad_request(f"{param}.action must be one of {', '.join(SESSION_ACTIONS)}, got {action!r}",
                          f"{param}.action", "invalid_value")
    timeout = raw.get("timeout", SESSION_TIMEOUT_SECS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= MAX_TTL_SECS:
        raise bad_request(f"{param}.timeout must be whole seconds from 1 to {MAX_TTL_SECS}, got {timeout!r}",
                          f"{param}.timeout", "invalid_value")
    values: dict[str, Any] = {"session_id": sid.strip(), "session_control": True}
    if action in ("open", "bind"):
        values["session_ttl_secs"] = float(timeout)
    if action == "close":
        values["session_final"] = True
    return values


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
    _check_session_id_length(len(raw.encode("latin-1")), header)  # header bytes, as sent
    return raw


def _check_session_id_length(n_bytes: int, param: str) -> None:
    if n_bytes > SESSION_ID_MAX_BYTES:
        raise bad_request(f"{param} is longer than {SESSION_ID_MAX_BYTES} bytes", param, "invalid_value")


def _final(given: dict[str, str]) -> bool:
    raw = given.get(SESSION_FINAL, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise bad_request(f"{SESSION_FINAL} must be true or false, got {raw!r}", SESSION_FINAL, "invalid_value")


def _parse(name: str, raw: Any, param: str) -> int | float:
    if name == "latency_sensitivity":
        value = _number(raw, param)
        if value < 0:
            raise bad_request(f"{param} must be seconds >= 0, got {raw!r}", param, "invalid_value")
        return value
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
