"""Routing hints from nvext and headers: what pins a request and what orders the router queue,
headers over the body, and malformed hints as 400s that name the field."""

from __future__ import annotations

import pytest

from dynamo.frontend.errors import ApiError
from dynamo.frontend.routing_hints import routing_hints
from dynamo.llm.protocol import BACKGROUND_TIER, RoutingHints


def h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]


def test_none_when_nothing_is_given():
    assert routing_hints(None, []) is None
    assert routing_hints({"guided_json": {}}, h(content_type="application/json")) is None


def test_nvext_fields():
    hints = routing_hints({"backend_instance_id": 7, "prefill_worker_id": 9,
                           "agent_hints": {"priority": 2.5, "strict_priority": 1, "osl": 100,
                                           "latency_sensitivity": 1.2}}, [])
    assert hints == RoutingHints(backend_instance_id=7, prefill_worker_id=9, priority=2.5, strict_priority=1,
                                 osl=100, latency_sensitivity=1.2)


def test_background_requests_take_the_lowest_tier_whatever_they_name():
    assert routing_hints(None, [], background=True) == RoutingHints(strict_priority=BACKGROUND_TIER)
    hints = routing_hints({"agent_hints": {"priority": 3, "strict_priority": 2}},
                          h(x_dynamo_request_strict_priority="5"), background=True)
    assert hints == RoutingHints(priority=3, strict_priority=BACKGROUND_TIER)  # its own order among batches


def test_headers_override_the_body_and_dynamo_spellings_win():
    hints = routing_hints({"backend_instance_id": 7, "agent_hints": {"priority": 1}},
                          h(x_worker_instance_id="8", x_dynamo_worker_instance_id="12", X_Prefill_Instance_Id="5",
                            x_dp_rank="1", x_dynamo_request_priority="-3", x_dynamo_request_strict_priority="2"))
    assert hints == RoutingHints(backend_instance_id=12, prefill_worker_id=5, dp_rank=1, priority=-3.0,
                                 strict_priority=2)


@pytest.mark.parametrize("nvext, headers, param", [
    ({"backend_instance_id": "abc"}, [], "nvext.backend_instance_id"),
    ({"backend_instance_id": -1}, [], "nvext.backend_instance_id"),
    ({"decode_worker_id": True}, [], "nvext.decode_worker_id"),
    ({"agent_hints": [1]}, [], "nvext.agent_hints"),
    ({"agent_hints": {"priority": "high"}}, [], "nvext.agent_hints.priority"),
    ({"agent_hints": {"strict_priority": 1.5}}, [], "nvext.agent_hints.strict_priority"),
    ({"agent_hints": {"osl": -5}}, [], "nvext.agent_hints.osl"),
    ({"agent_hints": {"latency_sensitivity": -1.0}}, [], "nvext.agent_hints.latency_sensitivity"),
    ({"agent_hints": {"latency_sensitivity": "soon"}}, [], "nvext.agent_hints.latency_sensitivity"),
    (None, h(x_dynamo_request_priority="nan"), "x-dynamo-request-priority"),
    (None, h(x_prefill_instance_id="0x10"), "x-prefill-instance-id"),
    ({"cache_salt": 7}, [], "nvext.cache_salt"),
    ({"cache_salt": "x" * 1025}, [], "nvext.cache_salt"),
    (None, h(x_tenant_id="t" * 1025), "x-tenant-id"),
])
def test_malformed_hints_are_400s_naming_the_field(nvext, headers, param):
    with pytest.raises(ApiError) as info:
        routing_hints(nvext, headers)
    assert info.value.status == 400 and info.value.param == param


# -- agent session identity -------------------------------------------------------------------
@pytest.mark.parametrize("headers, session, parent", [
    (h(x_dynamo_session_id="run-42:researcher", x_dynamo_parent_session_id="run-42"), "run-42:researcher", "run-42"),
    (h(x_claude_code_session_id="root"), "root", None),  # a Claude Code root turn
    (h(x_claude_code_session_id="root", x_claude_code_agent_id="kid"), "kid", "root"),  # a top-level child agent
    (h(x_claude_code_session_id="root", x_claude_code_agent_id="kid", x_claude_code_parent_agent_id="mid"),
     "kid", "mid"),  # a nested child agent
    (h(session_id="codex-1"), "codex-1", None),  # Codex
    (h(x_session_id="oc", x_parent_session_id="oc-parent"), "oc", "oc-parent"),  # OpenCode
    (h(x_session_id="oc", x_dynamo_session_id="mine"), "mine", None),  # the canonical header wins
])
def test_session_identity_from_dynamo_and_agent_headers(headers, session, parent):
    assert routing_hints(None, headers) == RoutingHints(session_id=session, parent_session_id=parent)


def test_session_final_and_other_hints_travel_together():
    hints = routing_hints({"backend_instance_id": 3}, h(x_dynamo_session_id="s", X_Dynamo_Session_Final="TRUE"))
    assert hints == RoutingHints(backend_instance_id=3, session_id="s", session_final=True)
    assert routing_hints(None, h(x_dynamo_session_id="s", x_dynamo_session_final="false")).session_final is False
    assert routing_hints(None, h(x_dynamo_session_final="true")) is None  # final without a session: nothing


@pytest.mark.parametrize("headers, param", [
    (h(x_dynamo_session_id="x" * 257), "x-dynamo-session-id"),
    (h(x_session_id="é" * 129), "x-session-id"),  # 258 bytes on the wire
    (h(x_dynamo_session_id="s", x_dynamo_session_final="maybe"), "x-dynamo-session-final"),
])
def test_malformed_session_headers_are_400s(headers, param):
    with pytest.raises(ApiError) as err:
        routing_hints(None, headers)
    assert err.value.status == 400 and err.value.param == param


def test_a_blank_session_header_is_no_session_and_256_bytes_are_fine():
    assert routing_hints(None, h(x_dynamo_session_id="  ")) is None
    assert routing_hints(None, h(x_dynamo_session_id="x" * 256)).session_id == "x" * 256


# -- nvext.session_control ----------------------------------------------------------------------
@pytest.mark.parametrize("control, expected", [
    ({"session_id": "s1"}, RoutingHints(session_id="s1", session_control=True)),  # an intermediate turn
    ({"session_id": "s1", "action": "open"}, RoutingHints(session_id="s1", session_control=True,
                                                         session_ttl_secs=300.0)),  # the default timeout
    ({"session_id": "s1", "action": "bind", "timeout": 30},
     RoutingHints(session_id="s1", session_control=True, session_ttl_secs=30.0)),
    ({"session_id": "s1", "action": "close", "timeout": 30},  # close keeps the binding's own timeout
     RoutingHints(session_id="s1", session_control=True, session_final=True)),
])
def test_session_control_asks_for_affinity(control, expected):
    assert routing_hints({"session_control": control}, []) == expected


def test_session_control_names_the_session_over_headers_and_keeps_a_header_parent():
    hints = routing_hints({"session_control": {"session_id": "body"}},
                          h(x_dynamo_session_id="header", x_dynamo_parent_session_id="root", x_dynamo_session_final="true"))
    assert hints == RoutingHints(session_id="body", parent_session_id="root", session_final=True, session_control=True)


@pytest.mark.parametrize("control, param", [
    ("s1", "nvext.session_control"),
    ({}, "nvext.session_control.session_id"),
    ({"session_id": "  "}, "nvext.session_control.session_id"),
    ({"session_id": 7}, "nvext.session_control.session_id"),
    ({"session_id": "é" * 129}, "nvext.session_control.session_id"),  # 258 bytes
    ({"session_id": "s", "action": "OPEN"}, "nvext.session_control.action"),
    ({"session_id": "s", "action": "pause"}, "nvext.session_control.action"),
    ({"session_id": "s", "timeout": 0}, "nvext.session_control.timeout"),
    ({"session_id": "s", "timeout": 1.5}, "nvext.session_control.timeout"),
    ({"session_id": "s", "timeout": True}, "nvext.session_control.timeout"),
    ({"session_id": "s", "timeout": 31_536_001}, "nvext.session_control.timeout"),
])
def test_malformed_session_control_is_a_400_naming_the_field(control, param):
    with pytest.raises(ApiError) as err:
        routing_hints({"session_control": control}, [])
    assert err.value.status == 400 and err.value.param == param


# -- KV namespace -----------------------------------------------------------------------------
@pytest.mark.parametrize("nvext, body, headers, salt", [
    ({"cache_salt": "a"}, None, [], "a"),
    (None, "b", [], "b"),  # vLLM's top-level field
    ({"cache_salt": "a"}, "b", [], "a"),  # nvext's wins
    ({"cache_salt": ""}, "b", [], "b"),  # an empty value is none
    ({"cache_salt": "a"}, "b", h(x_tenant_id="  t1 "), "t1"),  # a non-empty tenant header wins, trimmed
    ({"cache_salt": "a"}, None, h(x_tenant_id="  "), "a"),
    ({"cache_salt": "x" * 1024}, None, [], "x" * 1024),
])
def test_the_cache_salt_from_body_nvext_and_tenant_header(nvext, body, headers, salt):
    assert routing_hints(nvext, headers, body).cache_salt == salt


def test_no_salt_is_no_hint_and_a_bad_top_level_salt_is_a_400():
    assert routing_hints({"cache_salt": ""}, [], "  ") is None
    with pytest.raises(ApiError) as info:
        routing_hints(None, [], ["a"])
    assert info.value.status == 400 and info.value.param == "cache_salt"
