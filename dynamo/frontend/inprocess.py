"""Calling the frontend's own HTTP app in process (ASGI, no socket) for a unary answer: what the
Batch API runs each of a batch's requests through, so that admission, overload answers, routing,
migration, metrics and request logs are the same objects an HTTP client meets."""

from __future__ import annotations

import asyncio
from typing import Callable

INPROCESS_CLIENT = ("batch", 0)


async def call_app(app: Callable, path: str, payload: bytes,
                   headers: list[tuple[bytes, bytes]] = ()) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """POST `payload` (JSON) to `path` on `app`; its status, body and response headers. Cancelling the
    call is a client that went away: the app stops the worker's stream as it does for HTTP clients."""
    gone = asyncio.Event()
    sent = False
    status, body, response_headers = 500, bytearray(), []

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": payload, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status, response_headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "scheme": "http", "http_version": "1.1", "client": INPROCESS_CLIENT,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                         *headers]}
    try:
        await app(scope, receive, send)
    finally:
        gone.set()
    return status, bytes(body), response_headers
