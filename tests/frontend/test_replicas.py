"""Replica tags in the ids a frontend makes (replicas.py): every id names its maker, an id of another
form names none, and a request already forwarded is never forwarded again (the forwarding itself runs
end to end in tests/e2e/test_frontend_replicas.py)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from prometheus_client import CollectorRegistry

from dynamo.frontend.inprocess import BACKGROUND
from dynamo.frontend.replicas import (BACKGROUND_HEADER, FORWARDED_FROM, Replicas, adopt_background, new_id, owner_tag,
                                      tag_of)


def test_ids_carry_their_makers_tag():
    tag = tag_of(0x1234_5678_9ABC_DEF0)
    assert tag == "56789abcdef0"
    made = new_id("resp_", tag)
    assert made.startswith("resp_" + tag) and len(made) == len("resp_") + 32 and owner_tag(made, "resp_") == tag
    assert new_id("file-", "") != new_id("file-", "")  # no tag (a store outside a frontend): random only


def test_ids_of_other_forms_name_no_owner():
    assert owner_tag("file-abc", "file-") is None  # too short
    assert owner_tag("resp_XYZ456789abcdef0123", "resp_") is None  # not hex
    assert owner_tag("batch_56789abcdef0aa", "resp_") is None  # another prefix
    # characters no id has: such a path is never forwarded (it could name another route on the peer)
    assert owner_tag("file-56789abcdef0x/../../../metrics", "file-") is None
    assert owner_tag("file-56789abcdef0x%3F", "file-") is None


class Directory:
    """A discovery store that remembers what it was asked and knows no replica."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def get(self, key):
        self.asked.append(key)
        return None


def test_only_another_replicas_ids_are_looked_up_and_never_for_a_forwarded_request():
    directory = Directory()
    replicas = Replicas(directory, "dynamo", 0xABC, CollectorRegistry())
    mine, theirs = new_id("resp_", replicas.tag), new_id("resp_", tag_of(0xDEF))
    scope = {"headers": [], "method": "GET", "path": "/v1/responses/" + mine}
    assert asyncio.run(replicas.forward(mine, "resp_", scope, b"", None)) is False
    forwarded = {**scope, "headers": [(FORWARDED_FROM, b"000000000def")]}
    assert asyncio.run(replicas.forward(theirs, "resp_", forwarded, b"", None)) is False
    assert directory.asked == []
    assert asyncio.run(replicas.forward(theirs, "resp_", scope, b"", None)) is False  # no such replica: a 404
    assert directory.asked == ["v1/frontends/dynamo/000000000def"]


class Peer:
    """A discovery store naming one replica, at `url`."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def get(self, key):
        return json.dumps({"url": self.url}).encode()


async def _forwarded_headers(scope: dict) -> dict[bytes, bytes]:
    """The headers the owner replica (a real HTTP server) receives when `scope` is forwarded to it."""
    seen: dict[bytes, bytes] = {}

    async def owner(request: web.Request) -> web.Response:
        seen.update((k.lower(), v) for k, v in request.raw_headers)
        return web.json_response({"id": "resp"})

    app = web.Application()
    app.router.add_get("/v1/responses/{id}", owner)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    replicas = Replicas(Peer(f"http://127.0.0.1:{port}"), "dynamo", 0xABC, CollectorRegistry())
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    try:
        theirs = new_id("resp_", tag_of(0xDEF))
        assert await replicas.forward(theirs, "resp_", {**scope, "path": "/v1/responses/" + theirs}, b"", send)
        assert sent[0]["status"] == 200
    finally:
        await replicas.close()
        await runner.cleanup()
    return seen


def test_background_work_stays_background_on_the_replica_it_is_forwarded_to():
    """A Batch API line continuing a Response another replica holds runs there in the background tier too;
    a client's own `x-dynamo-background` header is not relayed."""
    scope = {"method": "GET", "query_string": b"", "headers": [(b"x-dynamo-background", b"1")]}
    client = asyncio.run(_forwarded_headers(scope))
    assert BACKGROUND_HEADER not in client and client[FORWARDED_FROM] == b"000000000abc"
    batch_line = asyncio.run(_forwarded_headers({**scope, "headers": [], BACKGROUND: True}))
    assert batch_line[BACKGROUND_HEADER] == b"1"
    arrived = {"headers": list(batch_line.items())}
    adopt_background(arrived)
    assert arrived[BACKGROUND] is True


def test_only_a_forwarded_request_is_marked_background_by_its_header():
    from_client = {"headers": [(BACKGROUND_HEADER, b"1")]}
    adopt_background(from_client)
    assert BACKGROUND not in from_client
