"""WorkerRole: every Dynamo spelling of the role parses to one enum value."""

import pytest

from dynamo.worker.role import WorkerRole


@pytest.mark.parametrize("mode, prefill, decode, want", [
    ("agg", False, False, WorkerRole.AGG),
    ("pd", False, False, WorkerRole.AGG),
    ("aggregated", False, False, WorkerRole.AGG),
    ("prefill_and_decode", False, False, WorkerRole.AGG),
    ("prefill", False, False, WorkerRole.PREFILL),
    ("decode", False, False, WorkerRole.DECODE),
    ("agg", True, False, WorkerRole.PREFILL),
    ("agg", False, True, WorkerRole.DECODE),
    ("prefill", True, False, WorkerRole.PREFILL),
])
def test_parse(mode, prefill, decode, want):
    assert WorkerRole.parse(mode, prefill, decode) is want


@pytest.mark.parametrize("mode, prefill, decode", [
    ("encode", False, False), ("agg", True, True), ("decode", True, False), ("prefill", False, True)])
def test_conflicts_and_unknown_modes_are_errors(mode, prefill, decode):
    with pytest.raises(ValueError):
        WorkerRole.parse(mode, prefill, decode)


def test_card_type_component_and_string_form():
    assert [r.card_type for r in WorkerRole] == ["aggregated", "prefill", "decode"]
    assert [r.default_component for r in WorkerRole] == ["backend", "prefill", "backend"]
    assert f"{WorkerRole.PREFILL}" == "prefill" and WorkerRole.DECODE == "decode"
