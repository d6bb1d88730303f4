"""The discovery boundary: a leased key-value store with list-then-watch.

Every process holds one *primary lease*; keys written with `leased=True` live only as
long as that lease is renewed, so a crashed worker's registrations vanish for every
watcher within the TTL. The lease id doubles as the process's instance id (u64,
printed as lowercase hex in keys such as `v1/instances/{ns}/{comp}/{ep}/{id:x}`).

Backends register by name (`mem`, `file`, `etcd`, `kubernetes`) and are imported lazily, so a process
using the file store never imports aiohttp.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import secrets
from abc import ABC, abstractmethod
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Literal

import msgspec

from dynamo.runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

DEFAULT_TTL = 10.0

LeaseChangeCallback = Callable[[int, int], "Awaitable[None] | None"]


class WatchEvent(msgspec.Struct, frozen=True):
    """One change seen by a prefix watch; `value` is None for deletes."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes | None = None


class KeyValueStore(ABC):
    """Leased KV store. Subclasses implement the `_`-free abstract methods below.

    Shared bookkeeping lives here: the keys written under the lease (so they can be
    re-put after a lease loss), lease-change callbacks and background tasks.
    """

    backend: str = ""
    requested_backend: str = ""  # what DYN_DISCOVERY_BACKEND asked for, when mapped to this backend

    def __init__(self, *, ttl: float = DEFAULT_TTL) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        self.ttl = float(ttl)
        # Called as cb(old_lease_id, new_lease_id) when recovery had to take a new lease.
        self.on_lease_change: list[LeaseChangeCallback] = []
        self._leased: dict[str, bytes] = {}
        self._tasks: set[asyncio.Task] = set()
        self._lease_id = 0
        self._started = False
        self._closed = False
        self._closed_event: asyncio.Event | None = None

    # ----- lifecycle -------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None:
        """Connect, grant the primary lease and start its keep-alive task."""

    @abstractmethod
    async def close(self) -> None:
        """Revoke the lease (leased keys vanish at once) and stop background work; idempotent."""

    async def __aenter__(self) -> "KeyValueStore":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def lease_id(self) -> int:
        """Primary lease id, also this process's instance id."""
        if not self._lease_id:
            raise RuntimeError(f"{self.backend} store not started")
        return self._lease_id

    @property
    def closed(self) -> bool:
        return self._closed

    # ----- data ------------------------------------------------------------------------

    @abstractmethod
    async def put(self, key: str, value: bytes, *, leased: bool = True) -> None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def get_prefix(self, prefix: str) -> dict[str, bytes]: ...

    @abstractmethod
    def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:
        """List-then-watch: a put per existing key, then changes, with no gap between."""

    # ----- helpers for subclasses ----------------------------------------------------

    def _check_open(self) -> None:
        if not self._started or self._closed:
            state = "closed" if self._closed else "not started"
            raise RuntimeError(f"{self.backend} store is {state}")

    def _remember(self, key: str, value: bytes, leased: bool) -> None:
        """Track leased keys so lease-loss recovery can re-put them."""
        if leased:
            self._leased[key] = value
        else:
            self._leased.pop(key, None)

    def _closed_signal(self) -> asyncio.Event:
        """Set when the store closes; watches wait on it to end."""
        if self._closed_event is None:
            self._closed_event = asyncio.Event()
            if self._closed:
                self._closed_event.set()
        return self._closed_event

    def _mark_closed(self) -> None:
        self._closed = True
        if self._closed_event is not None:
            self._closed_event.set()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.backend}-kv-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _cancel_tasks(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _fire_lease_change(self, old: int, new: int) -> None:
        """Tell the runtime the instance id changed so it can re-register under it."""
        for callback in list(self.on_lease_change):
            try:
                result = callback(old, new)
                if inspect.isawaitable(result):
                    self._spawn(_log_errors(result), "lease-change-cb")
            except Exception:
                log.exception("on_lease_change callback failed")


def diff_events(old: dict[str, bytes], new: dict[str, bytes]) -> list[WatchEvent]:
    """Events turning snapshot `old` into `new` (used by polling and by watch resync)."""
    events = [WatchEvent("put", k, v) for k, v in sorted(new.items()) if old.get(k) != v]
    events += [WatchEvent("delete", k) for k in sorted(old.keys() - new.keys())]
    return events


def new_lease_id() -> int:
    """Random nonzero 63-bit id: fits etcd's signed int64 lease ids and u64 instance ids."""
    return secrets.randbits(63) or 1


async def _log_errors(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("on_lease_change callback failed")


async def wait_closed_or(closed: asyncio.Event, awaitable: Awaitable[Any]) -> tuple[bool, Any]:
    """Await `awaitable` unless the store closes first; returns (closed, result)."""
    task = asyncio.ensure_future(awaitable)
    closer = asyncio.ensure_future(closed.wait())
    try:
        await asyncio.wait({task, closer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        closer.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled():
        return False, task.result()
    return True, None


# ----- registry ----------------------------------------------------------------------

_BACKENDS: dict[str, str | Callable[..., KeyValueStore]] = {
    "mem": "dynamo.runtime.discovery.mem:MemStore",
    "file": "dynamo.runtime.discovery.file:FileStore",
    "etcd": "dynamo.runtime.discovery.etcd:EtcdStore",
    "kubernetes": "dynamo.runtime.discovery.kubernetes:KubeStore",
}


def register_backend(name: str, factory: str | Callable[..., KeyValueStore]) -> None:
    """Add a backend: a callable `(ttl=..., **options)` or a lazy `"module:attr"` path."""
    _BACKENDS[name] = factory


def backends() -> list[str]:
    return sorted(_BACKENDS)


def _resolve(name: str) -> Callable[..., KeyValueStore]:
    try:
        factory = _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown discovery backend {name!r}; choose from {backends()}") from None
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory


def make_store(backend: str, *, ttl: float = DEFAULT_TTL, **options: Any) -> KeyValueStore:
    """Build (not start) a store by backend name."""
    return _resolve(backend)(ttl=ttl, **options)


def store_from_env(backend: str | None = None, ttl: float = DEFAULT_TTL,
                   settings: RuntimeSettings | None = None) -> KeyValueStore:
    """Backend from the argument, else DYN_DISCOVERY_BACKEND, else etcd when ETCD_ENDPOINTS is set, else `file`.

    Backend options come from their own settings (DYN_FILE_KV, ETCD_ENDPOINTS).
    """
    settings = settings or RuntimeSettings.from_env()
    name = settings.backend(backend)
    if name == "kubernetes" and not (settings.pod_name and (settings.kubernetes_service_host or
                                                           settings.kube_api_server)):
        # Not in a pod (no POD_NAME, no API server): `kubernetes` is served through etcd, as when
        # a manifest names it outside a cluster.
        logging.getLogger(__name__).info(
            "discovery backend 'kubernetes' outside a pod (no POD_NAME and API server) is served through etcd "
            "at %s", settings.etcd_urls())
        store = make_store("etcd", ttl=ttl)
        store.requested_backend = "kubernetes"
        return store
    if name == "kubernetes":
        return make_store(name, ttl=ttl, settings=settings)
    return make_store(name, ttl=ttl)


# ----- first contact -----------------------------------------------------------------

FIRST_CONTACT_S = 10.0  # how long start-up waits for the store before failing


class DiscoveryUnavailable(ConnectionError):
    """The discovery store could not be reached at start-up; the message says what to set."""


def unreachable_message(store: KeyValueStore, reason: BaseException) -> str:
    where = ",".join(getattr(store, "endpoints", []) or []) or "?"
    text = (f"discovery: no {store.backend} reachable at {where} after {FIRST_CONTACT_S:.0f}s ({_short(reason)}); "
            "set ETCD_ENDPOINTS to a reachable etcd")
    if store.backend == "kubernetes":
        text = (f"discovery: the Kubernetes API at {where} was not reachable after {FIRST_CONTACT_S:.0f}s "
                f"({_short(reason)})")
    elif store.requested_backend == "kubernetes":
        text += (" (DYN_DISCOVERY_BACKEND=kubernetes outside a pod is served through etcd: set POD_NAME and "
                 "DYN_KUBE_API_SERVER for the Kubernetes API, or give ETCD_ENDPOINTS)")
    elif store.backend == "etcd":
        text += ", or DYN_DISCOVERY_BACKEND=file for one machine"
    return text


def _short(reason: BaseException) -> str:
    text = repr(reason)
    for needle, short in (("ConnectionRefused", "connection refused"), ("Timeout", "timed out"),
                          ("gaierror", "name does not resolve"), ("Name or service", "name does not resolve")):
        if needle in text:
            return short
    return str(reason)[:120]


async def start_store(store: KeyValueStore, deadline: float = FIRST_CONTACT_S) -> None:
    """`store.start()`, retrying connection failures for `deadline` seconds, then
    DiscoveryUnavailable: a process without discovery fails fast instead of hanging."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    delay = 0.25
    while True:
        try:
            await store.start()
            return
        except DiscoveryUnavailable:  # reached, and refused: no retry helps
            await store.close()
            raise
        except ConnectionError as exc:
            if loop.time() + delay >= end:
                await store.close()  # its connections, before the process reports and exits
                raise DiscoveryUnavailable(unreachable_message(store, exc)) from None
            log.debug("discovery not reachable yet (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
