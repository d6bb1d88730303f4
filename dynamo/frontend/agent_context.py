"""`nvext.agent_context` (NVIDIA Dynamo's): the passive identity of an agent's request, its session and
trajectory, for request traces. It changes no routing, scheduling or caching; the frontend checks its
shape (a 400 naming the field) and writes it on the request's "request received" log line, so an
agent run's requests are found in the log by its session or trajectory id.

    {"session_type_id": str, "session_id": str, "trajectory_id": str,        (required)
     "parent_trajectory_id": str, "trajectory_final": bool}                  (optional)
"""

from __future__ import annotations

from typing import Any

from dynamo.frontend.errors import bad_request

PARAM = "nvext.agent_context"
REQUIRED = ("session_type_id", "session_id", "trajectory_id")
MAX_ID_BYTES = 256  # as session ids: an identity, not a payload


def agent_context(nvext: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request's agent context, checked; None when it sends none."""
    raw = (nvext or {}).get("agent_context")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request(f"{PARAM} must be an object", PARAM, "invalid_type")
    out = {name: _id(raw.get(name), name) for name in REQUIRED}
    if raw.get("parent_trajectory_id") is not None:
        out["parent_trajectory_id"] = _id(raw["parent_trajectory_id"], "parent_trajectory_id")
    final = raw.get("trajectory_final")
    if final is not None:
        if not isinstance(final, bool):
            raise bad_request(f"{PARAM}.trajectory_final must be a boolean", f"{PARAM}.trajectory_final",
                              "invalid_type")
        out["trajectory_final"] = final
    return out


def _id(value: Any, name: str) -> str:
    param = f"{PARAM}.{name}"
    if not isinstance(value, str) or not value.strip():
        raise bad_request(f"{param} must be a non-empty string", param, "invalid_value")
    if len(value.encode()) > MAX_ID_BYTES:
        raise bad_request(f"{param} is longer than {MAX_ID_BYTES} bytes", param, "invalid_value")
    return value
