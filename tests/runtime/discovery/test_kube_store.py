"""`KubeStore` against the Kubernetes API STAND-IN (tests/fixtures/kube_api_standin.py, served in this
process on a real socket): the store contract the other backends keep (put, get_prefix, list-then-
watch, close removes our records), readiness as the lease, and objects bigger than a stream reader's
line limit."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from dynamo.runtime.discovery.base import DiscoveryUnavailable
from dynamo.runtime.discovery.kubernetes import KubeStore
from dynamo.runtime.settings import RuntimeSettings
from tests.fixtures.kube_api_standin import STORE, make_app
from tests.fixtures.procs import free_port

NS = "team-a"
LABELS = {"nvidia.com/dynamo-discovery-backend": "kubernetes", "nvidia.com/dynamo-discovery-enabled": "true"}


class Api:
    """The stand-in on a fixed port, restartable (a restart loses its objects, as a restore from an
    empty or old backup would)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner: web.AppRunner | None = None
        self.standin = None

    async def start(self) -> None:
        app = make_app()
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)  # its watches wait for changes: do not wait
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.standin = app[STORE]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def api():
    server = Api()
    await server.start()
    yield server
    await server.stop()


def _store(url: str, pod: str) -> KubeStore:
    return KubeStore(settings=RuntimeSettings.from_env({"POD_NAME": pod, "POD_NAMESPACE": NS, "POD_UID": f"uid-{pod}",
                                                        "DYN_KUBE_API_SERVER": url}))


async def _ready(standin, pods: list[str]) -> None:
    obj = {"metadata": {"name": "svc-x", "labels": LABELS},
           "endpoints": [{"targetRef": {"kind": "Pod", "name": p}, "conditions": {"ready": True}} for p in pods]}
    await standin.write(NS, "endpointslices", "MODIFIED", obj)


async def _until(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def test_records_are_seen_while_their_pod_is_ready_and_leave_with_the_store(api):
    standin, url = api.standin, api.url
    worker, frontend = _store(url, "worker-0"), _store(url, "frontend-0")
    await worker.start()
    await frontend.start()
    try:
        key = f"v1/instances/dynamo/backend/generate/{worker.lease_id:x}"
        record = b'{"namespace":"dynamo","component":"backend","endpoint":"generate","instance_id":%d,' \
                 b'"transport":{"tcp":"10.0.0.7:1"}}' % worker.lease_id
        big = ("x" * 300_000).encode()  # an object far over aiohttp's 64 KiB line limit
        watch = frontend.watch_prefix("v1/")
        await worker.put(key, record)
        await worker.put("v1/event_channels/dynamo/backend/kv_events/big", big)
        assert await frontend.get_prefix("v1/") == {}  # not ready: not seen
        await _ready(standin, ["worker-0"])
        seen = {}
        while len(seen) < 2:
            event = await asyncio.wait_for(anext(watch), 10)
            seen[event.key] = event.value
        assert seen == {key: record, "v1/event_channels/dynamo/backend/kv_events/big": big}
        await _ready(standin, [])  # its probe failed
        gone = [await asyncio.wait_for(anext(watch), 10) for _ in range(2)]
        assert {(e.kind, e.key) for e in gone} == {("delete", key), ("delete", "v1/event_channels/dynamo/backend/"
                                                                               "kv_events/big")}
        await _ready(standin, ["worker-0"])
        await _until(lambda: _has(frontend, key), "seen again once ready")
        await worker.close()
        await _until(lambda: _lacks(frontend, key), "gone once the worker closed")
        assert ("team-a", "dynamoworkermetadatas") in standin.objects
        assert "worker-0" not in standin.objects[("team-a", "dynamoworkermetadatas")]
    finally:
        await worker.close()
        await frontend.close()


async def _has(store: KubeStore, key: str) -> bool:
    return key in await store.get_prefix("v1/")


async def _lacks(store: KubeStore, key: str) -> bool:
    return key not in await store.get_prefix("v1/")


async def test_records_come_back_after_the_api_server_lost_them(api):
    """The API server restarts with nothing (restored from an empty or old backup; versions count
    anew): the watches break, the next list lacks our object, and the process applies it again."""
    worker = _store(api.url, "worker-0")
    await worker.start()
    try:
        await worker.put("v1/event_channels/dynamo/backend/kv_events/x", b"advert")
        metadata = ("team-a", "dynamoworkermetadatas")
        assert "worker-0" in api.standin.objects[metadata]
        await api.stop()
        await api.start()
        assert metadata not in api.standin.objects

        async def restored() -> bool:
            return "worker-0" in api.standin.objects.get(metadata, {})
        await _until(restored, "re-applied after the loss", timeout=30)
        data = api.standin.objects[metadata]["worker-0"]["spec"]["data"]
        assert data["kv"] == {"v1/event_channels/dynamo/backend/kv_events/x": "advert"}
    finally:
        await worker.close()


@pytest.mark.parametrize("status, says", [(404, "install the DynamoWorkerMetadata CRD"),
                                          (403, "service account needs get/list/watch/patch/delete")])
async def test_a_missing_crd_or_rbac_is_a_start_up_error_saying_what_to_do(status, says):
    app = make_app(refuse={"dynamoworkermetadatas": status})
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store = _store(f"http://127.0.0.1:{port}", "worker-0")
    try:
        with pytest.raises(DiscoveryUnavailable, match=says):
            await store.start()
    finally:
        await store.close()
        await runner.cleanup()
