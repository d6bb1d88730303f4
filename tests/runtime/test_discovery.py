"""Discovery stores against real backends: in-process, a real directory, a real etcd."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from typing import AsyncIterator, Callable

import aiohttp
import pytest

from dynamo.runtime.discovery import mem
from dynamo.runtime.discovery.base import KeyValueStore, WatchEvent, diff_events, make_store, store_from_env
from dynamo.runtime.discovery.file_layout import LEASE_DIR, decode_segment, encode_segment
from tests.fixtures.servers import EtcdServer, free_port
from tests.fixtures.servers import etcd_server  # noqa: F401  (pytest fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEADLINE = 20.0  # generous: assert behaviour, not timings, on a loaded 2-core box
SHORT_TTL = 2.0

BACKENDS = ["mem", "file", "etcd"]


@pytest.fixture
def backend_options(request, tmp_path) -> Callable[[str], dict]:
    """Options that point a backend at this test's server or directory."""

    def options(backend: str) -> dict:
        if backend == "etcd":
            return {"endpoints": request.getfixturevalue("etcd_server")}
        if backend == "file":
            return {"root": str(tmp_path / "kv")}
        return {"name": f"test-{request.node.name}"}

    return options


@pytest.fixture
async def stores(backend_options) -> AsyncIterator[Callable]:
    """Factory of started stores, all closed at teardown."""
    made: list[KeyValueStore] = []

    async def factory(backend: str, ttl: float = 5.0) -> KeyValueStore:
        store = make_store(backend, ttl=ttl, **backend_options(backend))
        await store.start()
        made.append(store)
        return store

    yield factory
    for store in made:
        await store.close()


def unique_prefix() -> str:
    return f"v1/test/{uuid.uuid4().hex[:8]}/"


async def next_event(watch: AsyncIterator[WatchEvent], timeout: float = DEADLINE) -> WatchEvent:
    return await asyncio.wait_for(watch.__anext__(), timeout)


async def events_until(watch, done: Callable[[list[WatchEvent]], bool], timeout: float = DEADLINE) -> list:
    """Collect events until `done(events)`; fail with what was seen on timeout."""
    seen: list[WatchEvent] = []

    async def collect() -> None:
        async for event in watch:
            seen.append(event)
            if done(seen):
                return

    try:
        await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        pytest.fail(f"condition not met within {timeout}s; saw {seen}")
    return seen


# ----- basic operations ------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_put_get_prefix_delete(stores, backend):
    a, b = await stores(backend), await stores(backend)
    assert a.lease_id != b.lease_id and a.lease_id > 0 and a.backend == backend
    p = unique_prefix()
    await a.put(p + "one", b"1")
    await a.put(p + "one/lora", b"L")  # a key that is also a prefix of another key
    await a.put(p + "two", b"\x00\xff binary", leased=False)
    await a.put(p + "one", b"1b")  # overwrite
    assert await b.get(p + "one") == b"1b"
    assert await b.get(p + "missing") is None
    assert await b.get_prefix(p) == {p + "one": b"1b", p + "one/lora": b"L", p + "two": b"\x00\xff binary"}
    assert await b.get_prefix(p + "on") == {p + "one": b"1b", p + "one/lora": b"L"}
    assert await b.get_prefix(p + "nothing/") == {}
    await b.delete(p + "one")
    await b.delete(p + "never-existed")
    assert await a.get_prefix(p) == {p + "one/lora": b"L", p + "two": b"\x00\xff binary"}


@pytest.mark.parametrize("backend", BACKENDS)
async def test_odd_keys_round_trip(stores, backend):
    a = await stores(backend)
    p = unique_prefix()
    odd = [p + "..", p + ".", p + "a//b", p + "sp ace/é/%41", p + "x.kv", p + ".hidden", p + "trailing/"]
    for i, key in enumerate(odd):
        await a.put(key, str(i).encode())
    assert await a.get_prefix(p) == {key: str(i).encode() for i, key in enumerate(odd)}


def test_segment_encoding_is_reversible_and_safe():
    for segment in ["", ".", "..", "a.b", "x.kv", ".tmp-1", "%", "%25", "é/", "a b"]:
        name = encode_segment(segment)
        assert decode_segment(name) == segment
        assert name and not name.startswith(".") and "/" not in name and not name.endswith(".kv")


def test_diff_events():
    events = diff_events({"a": b"1", "b": b"2"}, {"b": b"3", "c": b"4"})
    assert events == [WatchEvent("put", "b", b"3"), WatchEvent("put", "c", b"4"), WatchEvent("delete", "a")]


def test_registry_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path))
    monkeypatch.delenv("DYN_DISCOVERY_BACKEND", raising=False)
    store = store_from_env(ttl=3)
    assert store.backend == "file" and store.ttl == 3 and store.root == str(tmp_path)
    monkeypatch.setenv("DYN_DISCOVERY_BACKEND", "mem")
    assert store_from_env().backend == "mem"
    with pytest.raises(ValueError, match="unknown discovery backend"):
        make_store("zookeeper")


# ----- watches ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_watch_lists_then_watches(stores, backend):
    a, b = await stores(backend), await stores(backend)
    p = unique_prefix()
    await a.put(p + "existing", b"old")
    await a.put("v1/elsewhere/" + p, b"not ours")
    watch = b.watch_prefix(p)
    assert await next_event(watch) == WatchEvent("put", p + "existing", b"old")
    await a.put(p + "new", b"n")
    await a.delete(p + "existing")
    seen = await events_until(watch, lambda s: len(s) >= 2)
    assert seen == [WatchEvent("put", p + "new", b"n"), WatchEvent("delete", p + "existing")]
    await watch.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_close_removes_leased_keys_for_watchers(stores, backend):
    a, b = await stores(backend), await stores(backend)
    p = unique_prefix()
    await a.put(p + "leased", b"1")
    await a.put(p + "kept", b"2", leased=False)
    watch = b.watch_prefix(p)
    first = await events_until(watch, lambda s: len(s) >= 2)
    assert {e.key for e in first} == {p + "leased", p + "kept"}
    await a.close()
    assert await next_event(watch) == WatchEvent("delete", p + "leased")
    assert await b.get_prefix(p) == {p + "kept": b"2"}
    await a.close()  # idempotent
    await watch.aclose()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_watch_ends_when_store_closes(stores, backend):
    a = await stores(backend)
    watch = a.watch_prefix(unique_prefix())

    async def drain() -> list:
        return [event async for event in watch]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.3)
    await a.close()
    assert await asyncio.wait_for(task, DEADLINE) == []


# ----- liveness across processes ------------------------------------------------------------

CHILD = """
import asyncio, json, sys
from dynamo.runtime.discovery.base import make_store

async def main():
    store = make_store(sys.argv[1], ttl=float(sys.argv[2]), **json.loads(sys.argv[3]))
    await store.start()
    await store.put(sys.argv[4], b"child")
    print("ready", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("backend", ["file", "etcd"])
async def test_sigkilled_process_keys_vanish(stores, backend_options, backend):
    watcher = await stores(backend)
    key = unique_prefix() + "instance"
    args = [sys.executable, "-c", CHILD, backend, str(SHORT_TTL), json.dumps(backend_options(backend)), key]
    child = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": REPO})
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), DEADLINE)
        assert line.strip() == b"ready", f"child failed to start (exit {child.poll()})"
        watch = watcher.watch_prefix(key)
        assert await next_event(watch) == WatchEvent("put", key, b"child")
        child.send_signal(signal.SIGKILL)
        # Deleted within TTL + margin; no clean shutdown happened.
        assert await next_event(watch, SHORT_TTL + DEADLINE) == WatchEvent("delete", key)
        assert await watcher.get(key) is None
        await watch.aclose()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


async def test_etcd_recovers_revoked_lease(stores, etcd_server):
    owner, watcher = await stores("etcd", ttl=SHORT_TTL), await stores("etcd")
    changes: list[tuple[int, int]] = []
    owner.on_lease_change.append(lambda old, new: changes.append((old, new)))
    key = unique_prefix() + "instance"
    await owner.put(key, b"me")
    lease = owner.lease_id
    watch = watcher.watch_prefix(key)
    assert await next_event(watch) == WatchEvent("put", key, b"me")
    async with aiohttp.ClientSession() as http:  # behind the store's back
        async with http.post(f"{etcd_server}/v3/lease/revoke", json={"ID": str(lease)}) as resp:
            assert resp.status == 200
    assert await next_event(watch) == WatchEvent("delete", key)
    assert await next_event(watch) == WatchEvent("put", key, b"me")  # re-registered
    assert owner.lease_id == lease and changes == []  # same id granted again
    await watch.aclose()
    await owner.close()
    assert await watcher.get(key) is None  # the recovered key is on the live lease


def apply_events(state: dict[str, bytes], events: list[WatchEvent]) -> dict[str, bytes]:
    state = dict(state)
    for event in events:
        if event.kind == "put":
            state[event.key] = event.value
        else:
            state.pop(event.key, None)
    return state


async def test_etcd_restart_with_data_loss_resyncs_and_recovers(tmp_path):
    """etcd comes back empty: watches re-list and emit the diff; the owner re-registers."""
    server = EtcdServer(str(tmp_path))
    url = server.start()
    owner = make_store("etcd", ttl=SHORT_TTL, endpoints=url, timeout=2.0)
    watcher = make_store("etcd", ttl=5.0, endpoints=url, timeout=2.0)
    try:
        await owner.start()
        await watcher.start()
        lease, p = owner.lease_id, unique_prefix()
        await owner.put(p + "instance", b"me")
        await watcher.put(p + "stale", b"s", leased=False)  # lost with the data
        watch = watcher.watch_prefix(p)
        before = apply_events({}, await events_until(watch, lambda s: len(s) >= 2))
        server.stop()
        server.start(wipe=True)
        wanted = {p + "instance": b"me"}
        seen = await events_until(watch, lambda s: apply_events(before, s) == wanted)
        assert WatchEvent("delete", p + "stale") in seen
        assert owner.lease_id == lease and await watcher.get(p + "instance") == b"me"
        await owner.put(p + "after", b"a")  # the new watch stream is live
        assert await next_event(watch) == WatchEvent("put", p + "after", b"a")
        await watch.aclose()
    finally:
        await owner.close()
        await watcher.close()
        server.stop()


async def test_etcd_endpoint_failover(etcd_server):
    dead = f"http://127.0.0.1:{free_port()}"
    store = make_store("etcd", endpoints=f"{dead},{etcd_server}", timeout=2.0)
    await store.start()
    key = unique_prefix() + "k"
    await store.put(key, b"v")
    assert await store.get(key) == b"v"
    await store.close()
    unreachable = make_store("etcd", endpoints=dead, timeout=1.0)
    with pytest.raises(ConnectionError):
        await unreachable.start()
    await unreachable.close()


async def test_file_recovers_removed_heartbeat(stores):
    owner = await stores("file", ttl=SHORT_TTL)
    watcher = await stores("file")
    key = unique_prefix() + "instance"
    await owner.put(key, b"me")
    os.unlink(os.path.join(owner.root, LEASE_DIR, f"{owner.lease_id:x}"))  # as a GC would
    os.unlink(os.path.join(owner.root, *key.split("/")) + ".kv")
    watch = watcher.watch_prefix(key)
    seen = await events_until(watch, lambda s: any(e.kind == "put" for e in s))
    assert seen[-1] == WatchEvent("put", key, b"me")
    await watch.aclose()


async def test_mem_stores_share_by_name():
    mem.reset()
    a, b, c = (make_store("mem", name=n) for n in ("x", "x", "y"))
    for store in (a, b, c):
        await store.start()
    await a.put("k", b"v")
    assert await b.get("k") == b"v" and await c.get("k") is None
    for store in (a, b, c):
        await store.close()
    with pytest.raises(RuntimeError):
        await a.put("k", b"v")


async def test_a_runtimes_lease_ttl_is_etcd_lease_ttl_as_in_dynamo(monkeypatch, tmp_path):
    from dynamo.runtime.distributed import DistributedRuntime

    monkeypatch.setenv("DYN_FILE_KV", str(tmp_path))
    monkeypatch.setenv("ETCD_LEASE_TTL", "4")
    runtime = await DistributedRuntime.create("file")
    try:
        assert runtime.store.ttl == 4.0  # a dead process's registrations vanish within it
    finally:
        await runtime.shutdown()
