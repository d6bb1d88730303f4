"""Calling the frontend's own HTTP app in process (ASGI, no socket) for a unary answer: what the
Batch API runs each of a batch's requests through, so that admission, overload answers, routing,
migration, metrics and request logs are the same objects an HTTP client meets."""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Iterable

INPROCESS_CLIENT = ("batch", 0)
# Scope key of a background request (the Batch API's): it routes in the lowest tier (BACKGROUND_TIER).
# Only an in-process caller can set it: no HTTP client reaches the scope.
BACKGROUND = "dynamo.background"


def post_scope(path: str, payload: bytes, headers: Iterable[tuple[bytes, bytes]] = (),
               client: tuple[str, int] = INPROCESS_CLIENT, background: bool = False) -> dict:
    """The ASGI scope of a JSON POST of `payload` to `path`, from `client`."""
    return {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
            "scheme": "http", "http_version": "1.1", "client": client, BACKGROUND: background,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                        *headers]}


def body_once(payload: bytes) -> tuple[Callable[[], Awaitable[dict]], asyncio.Event]:
    """An ASGI `receive` that gives `payload` whole, then waits until the event is set (the caller is
    gone) and says the client disconnected."""
    gone = asyncio.Event()
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive, gone


async def call_app(app: Callable, path: str, payload: bytes, headers: list[tuple[bytes, bytes]] = (),
                   background: bool = False) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """POST `payload` (JSON) to `path` on `app`; its status, body and response headers. Cancelling the
    call is a client that went away: the app stops the worker's stream as it does for HTTP clients.
    `background`: the request yields to every client's (BACKGROUND)."""
    receive, gone = body_once(payload)
    status, body, response_headers = 500, bytearray(), []

    async def send(message: dict) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status, response_headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    try:
        await app(post_scope(path, payload, headers, background=background), receive, send)
    finally:
        gone.set()
    return status, bytes(body), response_headers
