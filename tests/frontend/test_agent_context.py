"""nvext.agent_context: Dynamo's passive agent identity, checked field by field."""

from __future__ import annotations

import pytest

from dynamo.frontend.agent_context import agent_context
from dynamo.frontend.errors import ApiError

CTX = {"session_type_id": "coder", "session_id": "s", "trajectory_id": "s:t"}


def test_the_required_ids_and_the_optional_fields():
    assert agent_context(None) is None and agent_context({"other": 1}) is None
    assert agent_context({"agent_context": CTX}) == CTX
    full = {**CTX, "parent_trajectory_id": "s:p", "trajectory_final": True, "unknown": 3}
    assert agent_context({"agent_context": full}) == {**CTX, "parent_trajectory_id": "s:p", "trajectory_final": True}


@pytest.mark.parametrize("ctx, param", [
    ([1], "nvext.agent_context"),
    ({**CTX, "session_id": None}, "nvext.agent_context.session_id"),
    ({"session_id": "s", "trajectory_id": "t"}, "nvext.agent_context.session_type_id"),
    ({**CTX, "trajectory_id": "  "}, "nvext.agent_context.trajectory_id"),
    ({**CTX, "parent_trajectory_id": 5}, "nvext.agent_context.parent_trajectory_id"),
    ({**CTX, "trajectory_final": "yes"}, "nvext.agent_context.trajectory_final"),
    ({**CTX, "session_id": "x" * 257}, "nvext.agent_context.session_id"),
])
def test_a_malformed_context_is_a_400_naming_the_field(ctx, param):
    with pytest.raises(ApiError) as info:
        agent_context({"agent_context": ctx})
    assert info.value.status == 400 and info.value.param == param
