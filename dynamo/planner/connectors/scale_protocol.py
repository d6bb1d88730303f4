"""The scale-request boundary between a planner and the GlobalPlanner, with Dynamo's field names: a
planner in `environment: global-planner` sends its decisions to `<global_planner_namespace>.GlobalPlanner
.scale_request` instead of patching its graph, and the GlobalPlanner (`python -m dynamo.global_planner`)
authorizes them, holds every graph it manages to one GPU budget, and applies them. Encoded as msgpack on
the request plane."""

from __future__ import annotations

from typing import Any

import msgspec

COMPONENT = "GlobalPlanner"
SCALE_ENDPOINT = "scale_request"
HEALTH_ENDPOINT = "health"
SUCCESS, ERROR, REJECTED = "success", "error", "rejected"  # rejected: over budget, a decision to live with


class TargetReplica(msgspec.Struct, kw_only=True):
    sub_component_type: str  # prefill | decode
    desired_replicas: int
    component_name: str | None = None  # the graph's service; else found by sub_component_type


class ScaleRequest(msgspec.Struct, kw_only=True):
    caller_namespace: str  # the planner's Dynamo namespace: `{k8s namespace}-{DGD name}` under the operator
    graph_deployment_name: str
    k8s_namespace: str
    target_replicas: list[TargetReplica]
    blocking: bool = False
    timestamp: float | None = None
    predicted_load: dict[str, Any] | None = None


class ScaleResponse(msgspec.Struct, kw_only=True):
    status: str
    message: str = ""
    current_replicas: dict[str, int] = msgspec.field(default_factory=dict)


encode = msgspec.msgpack.Encoder().encode
decode_response = msgspec.msgpack.Decoder(ScaleResponse).decode
