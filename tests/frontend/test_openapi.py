"""`/openapi.json`'s document: every listed body schema resolves in its components and is the struct the
route decodes (a field it accepts is in the schema), moved routes are listed at their path with their
default's description, the routes with ids by their templates."""

from __future__ import annotations

from dynamo.frontend.openapi import PREFIX_ROUTES, ROUTES, document


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_reference_resolves():
    doc = document({key: key for key in ROUTES}, list(PREFIX_ROUTES))
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    found = list(refs(doc))
    assert found and all(ref.removeprefix("#/components/schemas/") in schemas for ref in found)


def test_bodies_are_the_decoding_structs():
    doc = document({key: key for key in ROUTES}, [])
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletionRequest")
    properties = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {"messages", "tools", "stream", "max_tokens", "response_format"} <= set(properties)
    rerank = doc["components"]["schemas"]["RerankRequest"]
    assert set(rerank["required"]) == {"model", "query", "documents"}
    assert "requestBody" not in doc["paths"]["/v1/models"]["get"]


def test_moved_routes_and_id_routes():
    served = {("POST", "/api/chat"): ("POST", "/v1/chat/completions"), ("GET", "/v1/models"): ("GET", "/v1/models")}
    doc = document(served, [("GET", "/v1/models/"), ("GET", "/elsewhere/")])
    assert set(doc["paths"]) == {"/api/chat", "/v1/models", "/v1/models/{model}"}
    assert doc["paths"]["/api/chat"]["post"]["summary"] == ROUTES[("POST", "/v1/chat/completions")][0]
