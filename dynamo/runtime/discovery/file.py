"""Serverless discovery on a shared directory: the default for one machine.

Root: `root` option, else DYN_FILE_KV, else `$TMPDIR/dynamo_store_kv`; frontend and
workers must share it. Liveness needs no server: each store touches its lease heartbeat
file every ttl/3, and a key whose heartbeat is missing or older than the TTL counts as
deleted, so a SIGKILLed process's keys vanish for every watcher within the TTL. Layout
details are in `file_layout`.

Watches poll the prefix's directory subtree (default every 0.25 s) and diff against
what they last reported; a change that comes and goes within one poll is not seen.

Lease loss (our heartbeat was garbage-collected, or we stalled past the TTL) is repaired
in place: the heartbeat is rewritten under the *same* lease id and every leased key is
re-put, so the instance id never changes with this backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import AsyncIterator, Iterator

from dynamo.runtime.discovery.base import (
    DEFAULT_TTL,
    DiscoveryUnavailable,
    KeyValueStore,
    WatchEvent,
    diff_events,
    new_lease_id,
    wait_closed_or,
)
from dynamo.runtime.discovery.file_layout import (
    LEASE_DIR,
    SUFFIX,
    LeaseTable,
    PrefixScanner,
    default_root,
    key_path,
    read_entry,
    write_atomic,
)

log = logging.getLogger(__name__)

TEMP_MAX_AGE = 60.0  # a temp file this old belongs to a writer that died mid-write


class FileStore(KeyValueStore):
    backend = "file"

    def __init__(
        self, *, ttl: float = DEFAULT_TTL, root: str | None = None, poll_interval: float = 0.25
    ) -> None:
        super().__init__(ttl=ttl)
        self.root = os.path.abspath(root or default_root())
        self.poll_interval = poll_interval
        self._leases = LeaseTable(self.root, fallback_ttl=ttl)
        self._last_beat = 0.0

    @property
    def _heartbeat_path(self) -> str:
        return os.path.join(self.root, LEASE_DIR, f"{self._lease_id:x}")

    # ----- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._lease_id = new_lease_id()
        with self._writable():
            os.makedirs(os.path.join(self.root, LEASE_DIR), exist_ok=True)
            self._write_heartbeat()
        self._started = True
        self._spawn(self._keep_alive(), "keepalive")

    async def close(self) -> None:
        """Remove the heartbeat first (keys die for everyone at once), then our key files."""
        if self._closed:
            return
        self._mark_closed()
        await self._cancel_tasks()
        if not self._started:
            return
        _unlink(self._heartbeat_path)
        for key in list(self._leased):
            path = key_path(self.root, key)
            entry = read_entry(path)
            if entry is not None and entry[0] == self._lease_id:
                _unlink(path)
        self._leased.clear()

    def _write_heartbeat(self) -> None:
        write_atomic(self._heartbeat_path, f"{self.ttl}\n".encode())
        self._last_beat = time.monotonic()

    async def _keep_alive(self) -> None:
        """Touch the heartbeat every ttl/3; now and then collect dead leases' files."""
        gc_every = max(3 * self.ttl, 30.0)
        next_gc = time.monotonic()
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                self._beat()
            except OSError as exc:
                log.warning("file store %s: heartbeat failed: %s", self.root, exc)
            if time.monotonic() >= next_gc:
                next_gc = time.monotonic() + gc_every
                try:
                    await asyncio.to_thread(self._collect_garbage, gc_every)
                except OSError as exc:
                    log.warning("file store %s: garbage collection failed: %s", self.root, exc)

    def _beat(self) -> None:
        stalled = time.monotonic() - self._last_beat > self.ttl
        try:
            os.utime(self._heartbeat_path)
            lost = False
        except FileNotFoundError:
            lost = True
        if lost or stalled:
            why = "heartbeat was removed" if lost else "keep-alive stalled past the TTL"
            log.warning(
                "file store lease %x lost (%s); re-registering %d keys", self._lease_id, why, len(self._leased)
            )
            self._write_heartbeat()
            for key, value in list(self._leased.items()):
                write_atomic(key_path(self.root, key), self._encode(value, True))
        self._last_beat = time.monotonic()

    def _collect_garbage(self, horizon: float) -> None:
        """Delete heartbeats dead for `horizon`, then key files whose heartbeat is gone.

        Readers already ignore dead keys; this only keeps the directory from growing.
        The long horizon leaves a stalled-but-alive process time to come back.
        """
        lease_dir = os.path.join(self.root, LEASE_DIR)
        now = time.time()
        for entry in _scandir(lease_dir):
            try:
                lease = int(entry.name, 16)
            except ValueError:
                _unlink_if_old(entry, now)
                continue
            age = self._leases.age(lease, now)
            if age is not None and age > max(horizon, 3 * self._leases.ttl_of(lease)):
                _unlink(entry.path)
        for path in _key_files(self.root, now):
            entry = read_entry(path)
            if entry is not None and entry[0] and self._leases.age(entry[0]) is None:
                _unlink(path)

    # ----- data ------------------------------------------------------------------------

    def _encode(self, value: bytes, leased: bool) -> bytes:
        return b"%x\n" % (self._lease_id if leased else 0) + bytes(value)

    async def put(self, key: str, value: bytes, *, leased: bool = True) -> None:
        self._check_open()
        with self._writable():
            write_atomic(key_path(self.root, key), self._encode(value, leased))
        self._remember(key, bytes(value), leased)

    @contextlib.contextmanager
    def _writable(self) -> Iterator[None]:
        """A store that cannot be written (a full disk, no permission) is discovery unavailable, said in one line."""
        try:
            yield
        except OSError as exc:
            raise DiscoveryUnavailable(f"discovery: the file store {self.root} cannot be written "
                                       f"({exc.strerror or exc}): free space or fix DYN_FILE_KV") from None

    async def delete(self, key: str) -> None:
        self._check_open()
        _unlink(key_path(self.root, key))
        self._leased.pop(key, None)

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        entry = read_entry(key_path(self.root, key))
        if entry is None or not self._leases.alive(entry[0]):
            return None
        return entry[1]

    async def get_prefix(self, prefix: str) -> dict[str, bytes]:
        self._check_open()
        return await asyncio.to_thread(self._visible, PrefixScanner(self.root, prefix))

    def _visible(self, scanner: PrefixScanner) -> dict[str, bytes]:
        """Keys under the scanner's prefix whose lease is alive (one stat per lease)."""
        found = scanner.scan()
        now = time.time()
        live = {lease for lease in {lease for lease, _ in found.values()} if self._leases.alive(lease, now)}
        return {key: value for key, (lease, value) in found.items() if lease in live}

    async def watch_prefix(self, prefix: str) -> AsyncIterator[WatchEvent]:  # type: ignore[override]
        self._check_open()
        scanner = PrefixScanner(self.root, prefix)
        closed = self._closed_signal()
        known: dict[str, bytes] = {}
        while not self._closed:
            current = await asyncio.to_thread(self._visible, scanner)
            for event in diff_events(known, current):
                yield event
            known = current
            stopped, _ = await wait_closed_or(closed, asyncio.sleep(self.poll_interval))
            if stopped:
                return


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _scandir(directory: str) -> list[os.DirEntry]:
    try:
        return list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _unlink_if_old(entry: os.DirEntry, now: float) -> None:
    try:
        if now - entry.stat(follow_symlinks=False).st_mtime > TEMP_MAX_AGE:
            os.unlink(entry.path)
    except OSError:
        pass


def _key_files(directory: str, now: float) -> list[str]:
    """Every key file under `directory`; removes abandoned temp files on the way."""
    paths: list[str] = []
    for entry in _scandir(directory):
        if entry.name.startswith(".tmp-"):
            _unlink_if_old(entry, now)
        elif entry.name.startswith("."):
            continue
        elif entry.name.endswith(SUFFIX):
            paths.append(entry.path)
        elif entry.is_dir(follow_symlinks=False):
            paths.extend(_key_files(entry.path, now))
    return paths
