"""`GET /openapi.json`: the frontend's routes as an OpenAPI 3.1 document, as NVIDIA Dynamo's frontend
serves one (API gateways import it; client generators read it). It lists the routes this frontend
serves now (at their moved paths, `DYN_HTTP_SVC_*_PATH`; the admin and Anthropic routes only where
enabled), and each request body's schema is generated from the struct that decodes it, so the
document says what the frontend accepts and cannot drift from it."""

from __future__ import annotations

from typing import Any, Callable

import msgspec

from dynamo.frontend.admin import BusyThresholdRequest
from dynamo.frontend.anthropic import MessagesRequest
from dynamo.frontend.embeddings import EmbeddingRequest
from dynamo.frontend.openai import ChatCompletionRequest, CompletionRequest
from dynamo.frontend.pooling_api import ClassifyRequest
from dynamo.frontend.batch_api import BatchCreate
from dynamo.frontend.rerank import RerankRequest, ScoreRequest, VllmRerankRequest
from dynamo.frontend.responses_request import ResponsesRequest
from dynamo.runtime.asgi import send_json

PATH = "/openapi.json"
VERSION = "0.1.0"

# Each route by its default (method, path): (what it does, the struct its JSON body decodes into).
ROUTES: dict[tuple[str, str], tuple[str, type | None]] = {
    ("POST", "/v1/chat/completions"): ("Create a chat completion (streamed as server-sent events with `stream`)",
                                       ChatCompletionRequest),
    ("POST", "/v1/completions"): ("Create a completion", CompletionRequest),
    ("POST", "/v1/responses"): ("Create a response (OpenAI's Responses API)", ResponsesRequest),
    ("POST", "/v1/responses/input_tokens"): ("Count a response request's input tokens", ResponsesRequest),
    ("POST", "/v1/embeddings"): ("Create embeddings", EmbeddingRequest),
    ("POST", "/v1/classify"): ("Classify inputs (class probabilities)", ClassifyRequest),
    ("POST", "/v1/pooling"): ("The pooled vectors of inputs", ClassifyRequest),
    ("POST", "/v1/rerank"): ("Rank documents by relevance to a query (a bare array, best first)", RerankRequest),
    ("POST", "/v2/rerank"): ("Rank documents (Jina's and Cohere's shape)", VllmRerankRequest),
    ("POST", "/rerank"): ("Rank documents (Jina's and Cohere's shape)", VllmRerankRequest),
    ("POST", "/v1/score"): ("Relevance scores of text pairs", ScoreRequest),
    ("POST", "/score"): ("Relevance scores of text pairs", ScoreRequest),
    ("POST", "/v1/messages"): ("Create a message (Anthropic's Messages API)", MessagesRequest),
    ("POST", "/v1/messages/count_tokens"): ("Count a message request's input tokens", MessagesRequest),
    ("POST", "/v1/files"): ("Upload a file (multipart/form-data: `file`, `purpose`; a batch's JSONL input)", None),
    ("GET", "/v1/files"): ("List the stored files", None),
    ("POST", "/v1/batches"): ("Run a file of requests as a batch (OpenAI's Batch API)", BatchCreate),
    ("GET", "/v1/batches"): ("List the batches", None),
    ("GET", "/busy_threshold"): ("Every model's busy thresholds", None),
    ("POST", "/busy_threshold"): ("Read or set a model's busy thresholds", BusyThresholdRequest),
    ("GET", "/v1/models"): ("List the served models", None),
    ("GET", "/health"): ("Health: 200 while serving (status healthy: a model has workers, or its requests wait for one), 503 draining", None),
    ("GET", "/live"): ("Liveness", None),
    ("GET", "/metrics"): ("Prometheus metrics", None),
    ("GET", PATH): ("This document", None),
}
# Routes whose paths carry an id, by their prefix.
PREFIX_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("GET", "/v1/models/"): ("/v1/models/{model}", "A model; `/v1/models/{model}/ready`: its readiness"),
    ("GET", "/v1/responses/"): ("/v1/responses/{response_id}", "A stored response; `.../input_items`: its input"),
    ("DELETE", "/v1/responses/"): ("/v1/responses/{response_id}", "Delete a stored response"),
    ("GET", "/v1/files/"): ("/v1/files/{file_id}", "A file; `.../content`: its content"),
    ("DELETE", "/v1/files/"): ("/v1/files/{file_id}", "Delete a file"),
    ("GET", "/v1/batches/"): ("/v1/batches/{batch_id}", "A batch: its status, counts and output files"),
    ("POST", "/v1/batches/"): ("/v1/batches/{batch_id}/cancel", "Cancel a batch (what ran is in its output)"),
}


def _operation(summary: str, body: type | None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": "OK"},
                                                           "4XX": {"description": "An OpenAI-style error"}}}
    if body is not None:
        ref = {"$ref": f"#/components/schemas/{body.__name__}"}
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
    return op


def document(routes: dict[tuple[str, str], tuple[str, str]], prefixes: list[tuple[str, str]]) -> dict[str, Any]:
    """The document for these routes: served (method, path) -> its default (method, path); and the
    (method, prefix) of the routes that carry an id."""
    paths: dict[str, dict[str, Any]] = {}
    bodies: set[type] = set()
    for (method, path), default in sorted(routes.items(), key=lambda item: item[0][1]):
        summary, body = ROUTES.get(default, (f"{default[1]}", None))
        paths.setdefault(path, {})[method.lower()] = _operation(summary, body)
        if body is not None:
            bodies.add(body)
    for key in prefixes:
        if key in PREFIX_ROUTES:
            path, summary = PREFIX_ROUTES[key]
            paths.setdefault(path, {})[key[0].lower()] = _operation(summary, None)
    _, schemas = msgspec.json.schema_components(sorted(bodies, key=lambda t: t.__name__),
                                               ref_template="#/components/schemas/{name}")
    return {"openapi": "3.1.0", "info": {"title": "Dynamo frontend (OpenAI-compatible)", "version": VERSION},
            "paths": paths, "components": {"schemas": schemas}}


class OpenApi:
    """The route; it learns each route's default key when made (before any is moved to another path)."""

    def __init__(self, routes: dict[tuple[str, str], Callable], prefix_routes: list[tuple[str, str, Callable]]):
        self.routes, self.prefix_routes = routes, prefix_routes
        self.defaults = {handler: key for key, handler in routes.items()}
        self.defaults[self.serve] = ("GET", PATH)
        self._doc: dict[str, Any] | None = None

    def route(self) -> dict[tuple[str, str], Callable]:
        return {("GET", PATH): self.serve}

    async def serve(self, scope, receive, send) -> None:
        if self._doc is None:  # the routes are fixed once the frontend serves
            served = {key: self.defaults.get(handler, key) for key, handler in self.routes.items()}
            self._doc = document(served, [(method, prefix) for method, prefix, _ in self.prefix_routes])
        await send_json(send, 200, self._doc)
