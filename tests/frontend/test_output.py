"""The output stage's helpers (frontend/output.py) that other tests do not reach directly."""

from __future__ import annotations

from dynamo.frontend.output import is_json


def test_arguments_are_json_only_as_strictly_as_clients_read_them():
    """NaN, Infinity and 1e999 are not JSON to msgspec (the Anthropic route's decoder) or to most clients."""
    assert is_json('{"a": 1}') and is_json("[]")
    assert not any(is_json(t) for t in ('{"a": NaN}', '{"a": Infinity}', '{"a": 1e999}', "{not json"))
