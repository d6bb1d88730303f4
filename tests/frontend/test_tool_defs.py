"""Tools' parameter schemas inside tool_choice required's list of calls (frontend/tool_defs.py): every
`$ref` resolves from the schema's root (what xgrammar and vLLM resolve refs from) without going through a
list's index (which xgrammar cannot follow, though jsonschema does), each tool's arguments are checked
against its own definitions, and the client's schemas are left as they were."""

from __future__ import annotations

import copy
import json

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from dynamo.frontend.errors import ApiError
from dynamo.frontend.openai import decode_request


def address(**props) -> dict:
    return {"type": "object", "properties": {k: {"type": t} for k, t in props.items()}, "required": list(props)}


# What pydantic writes for a model with a nested model: the nested one under `$defs`, named after its class.
SHIP = {"$defs": {"Address": address(city="string")}, "type": "object",
        "properties": {"to": {"$ref": "#/$defs/Address"}}, "required": ["to"]}
BILL = {"$defs": {"Address": address(zip="integer"), "Customer": {
            "type": "object", "properties": {"home": {"$ref": "#/$defs/Address"}}, "required": ["home"]}},
        "type": "object", "properties": {"who": {"$ref": "#/$defs/Customer"}}, "required": ["who"]}
SAME = {"$defs": {"Address": address(city="string")}, "type": "object",
        "properties": {"from": {"$ref": "#/$defs/Address"}}, "required": ["from"]}
# Draft-07's `definitions`, a ref to the tool's own root (a tree) and one to a sibling property.
TREE = {"definitions": {"Leaf": address(v="integer")}, "type": "object", "properties": {
    "leaf": {"$ref": "#/definitions/Leaf"}, "kids": {"type": "array", "items": {"$ref": "#"}},
    "twin": {"$ref": "#/properties/leaf"}}, "required": ["leaf"]}


def required(*params: tuple[str, dict], **over) -> dict:
    tools = [{"type": "function", "function": {"name": n, "parameters": p}} for n, p in params]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools, "tool_choice": "required"}
    return decode_request(json.dumps({**body, **over}).encode(), "chat").guided_decoding(True).json


def refs(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref" and isinstance(v, str)] + \
            [r for k, v in node.items() if k not in ("enum", "const") for r in refs(v)]
    return [r for v in node for r in refs(v)] if isinstance(node, list) else []


def assert_every_ref_resolves(schema: dict) -> None:
    resolver = Registry().with_resource("urn:calls", Resource.from_contents(
        schema, default_specification=DRAFT202012)).resolver(base_uri="urn:calls")
    for ref in refs(schema):
        resolver.lookup(ref)  # raises Unresolvable
        # xgrammar 0.2.8: "Cannot find field 0 in #/items/anyOf/0/properties/parameters".
        assert not any(part.isdigit() for part in ref.split("/")), ref


def valid(schema: dict, calls: list) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(calls)


def test_a_tools_defs_resolve_from_the_root_of_the_list():
    schema = required(("ship", SHIP))
    assert_every_ref_resolves(schema)
    assert valid(schema, [{"name": "ship", "parameters": {"to": {"city": "Paris"}}}])
    assert not valid(schema, [{"name": "ship", "parameters": {"to": {"city": 3}}}])


def test_two_tools_with_one_name_for_different_definitions_keep_their_own():
    schema = required(("ship", SHIP), ("bill", BILL), ("send", SAME))
    assert_every_ref_resolves(schema)
    assert valid(schema, [{"name": "ship", "parameters": {"to": {"city": "Paris"}}},
                          {"name": "bill", "parameters": {"who": {"home": {"zip": 75001}}}},
                          {"name": "send", "parameters": {"from": {"city": "Oslo"}}}])
    assert not valid(schema, [{"name": "bill", "parameters": {"who": {"home": {"city": "Paris"}}}}])
    assert not valid(schema, [{"name": "ship", "parameters": {"to": {"zip": 75001}}}])
    # The same definition twice is one definition; the other tool's is renamed, refs and all.
    assert sorted(schema["$defs"]) == ["Address", "bill.Address", "bill.Customer"]


def test_definitions_and_refs_to_a_tools_own_root_resolve_where_it_now_sits():
    schema = required(("tree", TREE), ("ship", SHIP))
    assert_every_ref_resolves(schema)
    tree = {"leaf": {"v": 1}, "twin": {"v": 2}, "kids": [{"leaf": {"v": 3}, "kids": []}]}
    assert valid(schema, [{"name": "tree", "parameters": tree}])
    assert not valid(schema, [{"name": "tree", "parameters": {**tree, "kids": [{"leaf": {"v": "x"}}]}}])
    assert not valid(schema, [{"name": "tree", "parameters": {**tree, "twin": {"v": "x"}}}])


def test_a_tool_with_refs_into_its_own_schema_moves_under_its_name_in_the_roots_defs():
    schema = required(("tree", TREE), ("ship", SHIP))
    tree, ship = (item["properties"]["parameters"] for item in schema["items"]["anyOf"])
    assert tree == {"$ref": "#/$defs/tree"} and ship["properties"]["to"] == {"$ref": "#/$defs/Address"}
    assert schema["$defs"]["tree"]["properties"]["kids"]["items"] == {"$ref": "#/$defs/tree"}
    assert schema["$defs"]["tree"]["properties"]["twin"] == {"$ref": "#/$defs/tree/properties/leaf"}


def test_a_moved_schema_takes_a_fresh_name_and_keeps_every_other_tools_definitions():
    # The tool "Leaf" defines a Leaf of its own; "odd/na~me" needs escaping; "other" defines what "Leaf"'s
    # schema took (renamed, as any clash is).
    other = {"$defs": {"Leaf_2": {"type": "string"}}, "type": "object", "properties": {
        "x": {"$ref": "#/$defs/Leaf_2"}}, "required": ["x"]}
    schema = required(("Leaf", TREE), ("odd/na~me", TREE), ("other", other))
    assert_every_ref_resolves(schema)
    assert sorted(schema["$defs"]) == ["Leaf", "Leaf_2", "odd/na~me", "other.Leaf_2"]
    assert schema["items"]["anyOf"][1]["properties"]["parameters"] == {"$ref": "#/$defs/odd~1na~0me"}
    tree = {"leaf": {"v": 1}, "kids": [{"leaf": {"v": 2}, "twin": {"v": 3}}]}
    assert valid(schema, [{"name": "Leaf", "parameters": tree}, {"name": "odd/na~me", "parameters": tree},
                          {"name": "other", "parameters": {"x": "s"}}])
    assert not valid(schema, [{"name": "other", "parameters": {"x": {"v": 1}}}])
    assert not valid(schema, [{"name": "odd/na~me", "parameters": {"leaf": {"v": "x"}}}])


@pytest.mark.parametrize("ref", ["#/$defs/Address", "#/definitions/Address", "#/$defs"])
def test_a_ref_to_a_definition_the_tool_lacks_is_a_400_naming_the_tool(ref):
    """Left as written it would resolve to another tool's `Address` (bill's) without a word."""
    lacking = {"type": "object", "properties": {"to": {"$ref": ref}}}
    with pytest.raises(ApiError) as info:
        required(("bill", BILL), ("ship", lacking))
    error = info.value.body()["error"]
    assert info.value.status == 400 and error["param"] == "tools[1].function.parameters"
    assert error["message"].startswith(f"tools[1]: `$ref` {ref!r}")


def test_the_clients_schemas_are_not_changed_and_one_call_only_when_not_parallel():
    before = copy.deepcopy([SHIP, BILL])
    schema = required(("ship", SHIP), ("bill", BILL), parallel_tool_calls=False)
    assert [SHIP, BILL] == before
    assert schema["maxItems"] == 1 and "maxItems" not in required(("ship", SHIP))
    call = {"name": "ship", "parameters": {"to": {"city": "Paris"}}}
    assert valid(schema, [call]) and not valid(schema, [call, call])


def test_defs_that_are_not_an_object_are_a_400():
    with pytest.raises(ApiError) as info:
        required(("ship", {**SHIP, "$defs": ["Address"]}))
    assert info.value.status == 400 and info.value.body()["error"]["param"] == "tools"
