"""A watch across an etcd that returns with its data lost (real etcd): keys missing from the
re-list are held for one TTL, so a live owner that re-puts its keys never seems to leave,
while a key nobody re-puts is still deleted."""

from __future__ import annotations

import aiohttp
import pytest

from dynamo.runtime.discovery.base import WatchEvent, make_store
from dynamo.runtime.discovery.etcd_gateway import b64
from tests.fixtures.servers import EtcdServer
from tests.runtime.test_discovery import events_until, next_event, unique_prefix

pytestmark = pytest.mark.e2e

GRACE = 5.0  # the watcher's TTL: how long it holds deletes found by a re-list


async def owner_put(http: aiohttp.ClientSession, url: str, key: str, value: bytes) -> None:
    """Put `key` on a fresh lease, behind any store's back: the test plays the owner."""
    async with http.post(f"{url}/v3/lease/grant", json={"TTL": 120}) as resp:
        lease = (await resp.json())["ID"]
    async with http.post(f"{url}/v3/kv/put", json={"key": b64(key), "value": b64(value), "lease": lease}) as resp:
        assert resp.status == 200, await resp.text()


def kill_and_wipe(server: EtcdServer) -> None:
    """SIGKILL etcd, then start it again on the same ports with an empty data dir."""
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(10)
    server.proc = None
    server.start(wipe=True)


async def test_keys_lost_with_etcds_data_are_held_until_their_owner_reputs_them(tmp_path):
    server = EtcdServer(str(tmp_path))
    url = server.start()
    watcher = make_store("etcd", ttl=GRACE, endpoints=url, timeout=2.0)
    p = unique_prefix()
    live, dead, sentinel = p + "live", p + "dead", p + "sentinel"
    try:
        await watcher.start()
        # A new connection per call: pooled ones die with the killed etcd.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await owner_put(http, url, live, b"me")
            await owner_put(http, url, dead, b"gone")
            watch = watcher.watch_prefix(p)
            await events_until(watch, lambda s: len(s) == 2)
            kill_and_wipe(server)
            await owner_put(http, url, sentinel, b"s")  # seen once the watch has re-listed
            seen = await events_until(watch, lambda s: WatchEvent("put", sentinel, b"s") in s)
            await owner_put(http, url, live, b"me")  # the owner re-registers, as on its next keep-alive
            seen += await events_until(watch, lambda s: WatchEvent("delete", dead) in s)
        assert [e for e in seen if e.key == live] == []  # consumers never saw it go (nor come back)
        await watcher.put(p + "after", b"a", leased=False)  # the stream is still live
        assert await next_event(watch) == WatchEvent("put", p + "after", b"a")
        await watcher.close()
        assert [e async for e in watch] == []  # the watch ends with the store ...
        assert not watcher._tasks  # ... and its stream reader is gone
    finally:
        await watcher.close()
        server.stop()
