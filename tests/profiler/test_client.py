"""The profiler's measuring client against a real HTTP server: "retry later" answers (503, 529) are
retried and the answered attempt is the one measured; other errors, and retries past the limit, are errors."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from dynamo.profiler import client


async def serve(statuses: list[int]):
    """A /v1/completions that answers `statuses` in turn, then streams 3 tokens."""
    seen = []

    async def completions(request: web.Request) -> web.StreamResponse:
        seen.append(await request.json())
        if statuses:
            status = statuses.pop(0)
            return web.json_response({"error": {"message": "retry later", "code": "no_workers"}}, status=status)
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for text in ("a", "b", "c"):
            await resp.write(f"data: {json.dumps({'choices': [{'text': text}]})}\n\n".encode())
        await resp.write(f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': 3}})}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}", seen


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch):
    monkeypatch.setattr(client, "RETRY_PAUSE_S", 0.01)


async def test_retry_later_answers_are_retried_and_the_answered_attempt_measured():
    runner, url, seen = await serve([503, 529])
    try:
        stats = await client.measure(url, "m", isl=8, osl=3, concurrency=1, requests=1)
    finally:
        await runner.cleanup()
    assert stats.errors == [] and stats.retries == 2 and len(seen) == 3
    assert len(stats.ttft_ms) == 1 and stats.output_tokens == 3 and len(stats.itl_ms) == 1


async def test_other_errors_and_retries_past_the_limit_are_errors():
    runner, url, _ = await serve([400])
    try:
        stats = await client.measure(url, "m", isl=8, osl=3, concurrency=1, requests=1)
    finally:
        await runner.cleanup()
    assert stats.retries == 0 and stats.errors[0].startswith("HTTP 400")
    runner, url, seen = await serve([503] * (client.RETRIES + 1))
    try:
        stats = await client.measure(url, "m", isl=8, osl=3, concurrency=1, requests=1)
    finally:
        await runner.cleanup()
    assert stats.retries == client.RETRIES and stats.errors[0].startswith("HTTP 503")
    assert len(seen) == client.RETRIES + 1


async def test_warm_ups_count_only_when_answered():
    # The first requests to a fresh engine pay its start-up: a warm-up that failed has warmed nothing.
    runner, url, seen = await serve([400, 400])
    try:
        stats = await client.measure(url, "m", isl=8, osl=3, concurrency=1, requests=1, warmup=1)
    finally:
        await runner.cleanup()
    assert len(seen) == 4  # two failed warm-ups, the answered one, then the measured request
    assert stats.errors == [] and len(stats.ttft_ms) == 1
