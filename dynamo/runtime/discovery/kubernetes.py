"""Kubernetes-native discovery (`DYN_DISCOVERY_BACKEND=kubernetes` in a pod), as NVIDIA Dynamo's
operator runs it: no etcd; each process's records live in one `DynamoWorkerMetadata` object
(`nvidia.com/v1alpha1`, named after its pod, owned by the pod so it is garbage-collected with it),
and a process's records are seen only while its pod is ready in an EndpointSlice the operator
labels for discovery. Pod readiness is the lease: a pod that fails its probe, is deleted or dies
drops out of every watcher's view, as an expired etcd lease does.

The object's `spec.data` is Dynamo's layout: `endpoints` ("ns/component/endpoint" -> the instance
record) and `model_cards` ("ns/component/endpoint[/suffix]" -> the model record, `card_json`
inside), plus `kv` for this runtime's other records (event-plane adverts). The instance id is
Dynamo's: the pod name's Rust `DefaultHasher` (SipHash-1-3, zero keys) masked to 53 bits, so it
is stable across restarts of a pod and fits a JSON number.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator

from dynamo.runtime.discovery.base import (DEFAULT_TTL, DiscoveryUnavailable, KeyValueStore, WatchEvent,
                                           diff_events)
from dynamo.runtime.discovery.kube_api import Gone, KubeApi, KubeApiError
from dynamo.runtime.discovery.kube_view import ClusterView, cr_data, pod_instance_id
from dynamo.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

RESOURCE = "dynamoworkermetadatas"
SLICES = "endpointslices"
SLICE_SELECTOR = "nvidia.com/dynamo-discovery-backend=kubernetes,nvidia.com/dynamo-discovery-enabled=true"
FIELD_MANAGER = "dynamo-worker"
LISTED = 1 << 62  # the "version" of a fresh list: past any apply (a restored API server may count anew)
RETRY_S = 1.0


class KubeStore(KeyValueStore):
    backend = "kubernetes"

    def __init__(self, *, ttl: float = DEFAULT_TTL, settings: RuntimeSettings | None = None) -> None:
        super().__init__(ttl=ttl)
        self.settings = settings or RuntimeSettings.from_env()
        if not self.settings.pod_name:
            raise RuntimeError("discovery backend 'kubernetes' needs POD_NAME (the operator sets it through the "
                               "downward API)")
        self.name = _object_name(self.settings)
        self.api: KubeApi | None = None
        self.view = ClusterView()
        self._own: dict[str, bytes] = {}
        self._write = asyncio.Lock()
        self._synced: asyncio.Event | None = None
        self._listed: set[str] = set()
        self._restoring = False
        self._applied = 0  # resource version of our last apply

    @property
    def endpoints(self) -> list[str]:  # where start-up looked (for the "unreachable" message)
        return [self.api.server] if self.api is not None else []

    async def start(self) -> None:
        if self._started:
            return
        self.api = self.api or KubeApi.from_settings(self.settings)
        try:
            await self.api.list(RESOURCE)  # reachable, and allowed to read (RBAC)
        except KubeApiError as exc:
            if exc.status == 404:
                raise DiscoveryUnavailable(f"discovery: the Kubernetes API has no {RESOURCE} ({exc}): install the "
                                           "DynamoWorkerMetadata CRD (NVIDIA Dynamo's CRDs, or `dynamo.deploy render "
                                           "--include-crd`)") from None
            raise DiscoveryUnavailable(f"discovery: the Kubernetes API refused to list {RESOURCE} ({exc}); the pod's "
                                       "service account needs get/list/watch/patch/delete on them and get/list/watch "
                                       "on endpointslices") from None
        self._lease_id = pod_instance_id(self.name)
        self._synced = asyncio.Event()
        self._spawn(self._follow(SLICES, SLICE_SELECTOR, lambda objects, _version: self.view.set_slices(objects)),
                    "watch-slices")
        self._spawn(self._follow(RESOURCE, None, self._metadata_seen), "watch-metadata")
        self._started = True
        log.info("discovery through the Kubernetes API at %s (namespace %s, %s, instance %x)", self.api.server,
                 self.api.namespace, self.name, self._lease_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._mark_closed()
        await self._cancel_tasks()
        self.view.close()
        if self.api is not None:
            if self._started:
                try:  # our records leave at once, as a revoked lease's do
                    await self.api.delete(RESOURCE, self.name)
                except (ConnectionError, KubeApiError) as exc:
                    log.warning("could not delete %s %s: %s", RESOURCE, self.name, exc)
            await self.api.close()

    # ----- data ------------------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, leased: bool = True) -> None:
        self._check_open()
        self._own[key] = bytes(value)
        self._remember(key, bytes(value), leased)
        await self._publish()

    async def delete(self, key: str) -> None:
        self._check_open()
        self._leased.pop(key, None)
        if self._own.pop(key, None) is not None:
            await self._publish()

    async def get(self, key: str) -> bytes | None:
        return (await self.get_prefix(key)).get(key)

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        self._check_open()
        await self._wait_synced()
        return {k: v for k, v in self.view.visible().items() if k.startswith(prefix)}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:  # type: ignore[override]
        self._check_open()
        await self._wait_synced()
        changes = self.view.subscribe()
        try:
            known: dict[str, bytes] = {}
            while True:
                current = {k: v for k, v in self.view.visible().items() if k.startswith(prefix)}
                for event in diff_events(known, current):
                    yield event
                known = current
                if not await changes.get():  # False: the store closed
                    return
        finally:
            self.view.unsubscribe(changes)

    # ----- the cluster -----------------------------------------------------------------

    def _metadata_seen(self, objects: dict[str, dict], version: int) -> None:
        """The view's update; and our own object re-applied when it is gone, at a version past our
        last apply, while we hold records (deleted by hand, or lost with the API server's store), as
        a lost etcd lease is re-granted."""
        self.view.set_metadata(objects)
        if (self._own and self.name not in objects and version > self._applied and not self._closed
                and not self._restoring):
            self._restoring = True
            self._spawn(self._restore(), "restore")

    async def _restore(self) -> None:
        try:
            while not self._closed:
                try:
                    await self._publish()
                    log.warning("%s %s was gone: re-applied this process's %d record(s)", RESOURCE, self.name,
                                len(self._own))
                    return
                except (ConnectionError, KubeApiError) as exc:
                    log.warning("re-applying %s %s: %s", RESOURCE, self.name, exc)
                    await asyncio.sleep(RETRY_S)
        finally:
            self._restoring = False

    async def _publish(self) -> None:
        """Apply this process's records as its DynamoWorkerMetadata (whole, in order of the writes)."""
        assert self.api is not None
        body = {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoWorkerMetadata",
                "metadata": {"name": self.name, "namespace": self.api.namespace, "ownerReferences": self._owner()},
                "spec": {"data": cr_data(self._own)}}
        async with self._write:
            applied = await self.api.apply(RESOURCE, self.name, body, FIELD_MANAGER)
            self._applied = _version(applied)

    def _owner(self) -> list[dict[str, Any]]:
        if not self.settings.pod_uid:
            return []
        return [{"apiVersion": "v1", "kind": "Pod", "name": self.settings.pod_name, "uid": self.settings.pod_uid,
                 "controller": False, "blockOwnerDeletion": False}]

    async def _wait_synced(self) -> None:
        assert self._synced is not None
        if not self._synced.is_set():
            await asyncio.wait_for(self._synced.wait(), 30.0)

    async def _follow(self, resource: str, selector: str | None, replace) -> None:
        """List, then watch from the list's version, for as long as the store is open; relist
        after a broken or expired watch (the view is replaced whole, so nothing is missed)."""
        assert self.api is not None and self._synced is not None
        while not self._closed:
            try:
                items, version = await self.api.list(resource, selector)
                objects = {o["metadata"]["name"]: o for o in items}
                replace(objects, LISTED)  # a fresh list is the whole truth, whatever its versions
                self._listed.add(resource)
                if len(self._listed) == 2:  # both the slices and the metadata: the view is whole
                    self._synced.set()
                async for kind, obj in self.api.watch(resource, version, selector):
                    if kind == "BOOKMARK":
                        continue
                    name = obj.get("metadata", {}).get("name", "")
                    if kind == "DELETED":
                        objects.pop(name, None)
                    else:
                        objects[name] = obj
                    replace(objects, _version(obj))
            except asyncio.CancelledError:
                raise
            except Gone:
                continue
            except (ConnectionError, KubeApiError, OSError, ValueError, asyncio.TimeoutError) as exc:
                log.warning("watching %s: %s; listing again in %.0fs", resource, exc, RETRY_S)
                await asyncio.sleep(RETRY_S)


def _version(obj: dict) -> int:
    """An object's resourceVersion as a number (opaque to clients in general, but an integer on every
    etcd-backed API server; 0 when it is not one, which never triggers a restore)."""
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _object_name(settings: RuntimeSettings) -> str:
    """The pod's name, or `{pod}-{container}` in container mode (a container named `main` keeps the pod's)."""
    pod = settings.pod_name or ""
    container = settings.container_name
    if settings.kube_discovery_mode == "container" and container and container != "main":
        return f"{pod}-{container}"
    return pod

