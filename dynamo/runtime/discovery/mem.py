"""In-process discovery store for single-process development and tests.

All `MemStore`s of one process that share a `name` (option, default "default") see the
same keys, so a frontend and several workers started in one test process discover each
other. There is no clock-driven expiry: a lease ends when its store closes. Watchers may
live on different event loops (threads); events are handed over with
`call_soon_threadsafe`, which also keeps them in order.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import AsyncIterator

from dynamo.runtime.discovery.base import DEFAULT_TTL, KeyValueStore, WatchEvent, new_lease_id


@dataclass(eq=False)
class _Watcher:
    prefix: str
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def deliver(self, event: WatchEvent | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, event)
        except RuntimeError:  # loop already closed: the watcher is dead anyway
            pass


@dataclass(eq=False)
class _Space:
    """One shared keyspace: key -> (value, lease id or 0 for unleased)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    data: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    watchers: set[_Watcher] = field(default_factory=set)

    def notify(self, event: WatchEvent) -> None:
        """Caller holds the lock, so events are queued in mutation order."""
        for watcher in self.watchers:
            if event.key.startswith(watcher.prefix):
                watcher.deliver(event)


_SPACES: dict[str, _Space] = {}
_SPACES_LOCK = threading.Lock()


def _space(name: str) -> _Space:
    with _SPACES_LOCK:
        return _SPACES.setdefault(name, _Space())


def reset(name: str | None = None) -> None:
    """Forget one keyspace (or all); for test isolation."""
    with _SPACES_LOCK:
        if name is None:
            _SPACES.clear()
        else:
            _SPACES.pop(name, None)


class MemStore(KeyValueStore):
    backend = "mem"

    def __init__(self, *, ttl: float = DEFAULT_TTL, name: str = "default") -> None:
        super().__init__(ttl=ttl)
        self.name = name
        self._space = _space(name)
        self._watchers: set[_Watcher] = set()

    async def start(self) -> None:
        if self._started:
            return
        self._lease_id = new_lease_id()
        self._started = True

    async def close(self) -> None:
        """Drop every key held by our lease (watchers see deletes) and end our watches."""
        if self._closed or not self._started:
            self._mark_closed()
            return
        self._mark_closed()
        space = self._space
        with space.lock:
            mine = [k for k, (_, lease) in space.data.items() if lease == self._lease_id]
            for key in mine:
                del space.data[key]
                space.notify(WatchEvent("delete", key))
        for watcher in list(self._watchers):
            watcher.deliver(None)
        await self._cancel_tasks()

    async def put(self, key: str, value: bytes, *, leased: bool = True) -> None:
        self._check_open()
        value = bytes(value)
        with self._space.lock:
            self._space.data[key] = (value, self._lease_id if leased else 0)
            self._space.notify(WatchEvent("put", key, value))
        self._remember(key, value, leased)

    async def delete(self, key: str) -> None:
        self._check_open()
        with self._space.lock:
            if self._space.data.pop(key, None) is not None:
                self._space.notify(WatchEvent("delete", key))
        self._leased.pop(key, None)

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        with self._space.lock:
            entry = self._space.data.get(key)
        return entry[0] if entry else None

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        self._check_open()
        with self._space.lock:
            return {k: v for k, (v, _) in self._space.data.items() if k.startswith(prefix)}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:  # type: ignore[override]
        self._check_open()
        watcher = _Watcher(prefix, asyncio.get_running_loop())
        space = self._space
        with space.lock:  # snapshot and subscribe atomically: no gap, no duplicate
            snapshot = sorted((k, v) for k, (v, _) in space.data.items() if k.startswith(prefix))
            space.watchers.add(watcher)
        self._watchers.add(watcher)
        try:
            for key, value in snapshot:
                yield WatchEvent("put", key, value)
            while True:  # ends on the None sentinel pushed by close()
                event = await watcher.queue.get()
                if event is None:
                    return
                yield event
        finally:
            with space.lock:
                space.watchers.discard(watcher)
            self._watchers.discard(watcher)
